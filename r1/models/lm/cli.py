"""`r1 generate` (declared in config.py's `COMMANDS`): text streamed as it is produced, with a KV cache."""
from __future__ import annotations

import sys

from r1.command_spec import Invocation

FLAGS = {"temperature": "--temperature", "top_k": "--top-k", "top_p": "--top-p"}


def generate(inv: Invocation) -> None:
    cfg, model = inv.settings(), inv.args["model"]
    import torch

    from r1.models.lm.generate import check_sampling, default_exit_threshold, load_lm, prompt_text, stream_text

    check_sampling(cfg.temperature, cfg.top_k, cfg.top_p, FLAGS)
    if cfg.runtime != "torch":
        from r1.models.lm.onnx_predictor import stream_pieces
        pieces = stream_pieces(model, cfg.runtime, cfg.prompt, cfg.max_new_tokens, cfg.temperature, cfg.top_k,
                               cfg.top_p, cfg.seed, cfg.chat)
    else:
        m, tok = load_lm(model)
        threshold = cfg.exit_threshold if cfg.exit_threshold is not None else default_exit_threshold(m)
        pieces = stream_text(m, tok, prompt_text(m.r1_meta, cfg.prompt, cfg.chat), cfg.max_new_tokens,
                             temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p, use_cache=cfg.cache,
                             exit_threshold=threshold, generator=torch.Generator().manual_seed(cfg.seed))
    for piece in pieces:
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
