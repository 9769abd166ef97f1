"""Language-model tooling shared by data, models and the CLI: tokenizers, corpus cleaning,
generation (KV cache, sampling, streaming) and the replay buffer for continual learning."""
