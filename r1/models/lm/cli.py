"""`r1 generate` (declared in config.py's `COMMANDS`): text streamed as it is produced, with a KV cache."""
from __future__ import annotations

import sys
import time

from r1.command_spec import Invocation

FLAGS = {"temperature": "--temperature", "top_k": "--top-k", "top_p": "--top-p"}


def generate(inv: Invocation) -> None:
    cfg, model = inv.settings(), inv.args["model"]
    import torch

    from r1.cli.console import console_logging
    from r1.models.lm.generate import check_sampling, default_exit_threshold, load_lm, prompt_text, stream_text

    check_sampling(cfg.temperature, cfg.top_k, cfg.top_p, FLAGS)
    console_logging()  # r1's progress lines (a first export, a quantization) on stderr
    stats: dict = {}
    if cfg.runtime != "torch":
        from r1.models.lm.onnx_predictor import stream_pieces
        pieces = stream_pieces(model, cfg.runtime, cfg.prompt, cfg.max_new_tokens, cfg.temperature, cfg.top_k,
                               cfg.top_p, cfg.seed, cfg.chat, stats)
    else:
        m, tok = load_lm(model)
        threshold = cfg.exit_threshold if cfg.exit_threshold is not None else default_exit_threshold(m)
        pieces = stream_text(m, tok, prompt_text(m.r1_meta, cfg.prompt, cfg.chat), cfg.max_new_tokens, stats,
                             temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p, use_cache=cfg.cache,
                             exit_threshold=threshold, generator=torch.Generator().manual_seed(cfg.seed))
    if cfg.echo:
        sys.stdout.write(cfg.prompt)
    t0 = time.perf_counter()
    for piece in pieces:
        sys.stdout.write(piece)
        sys.stdout.flush()
    seconds = time.perf_counter() - t0
    sys.stdout.write("\n")
    sys.stdout.flush()
    n = stats.get("tokens", 0)
    threads = torch.get_num_threads() if cfg.runtime == "torch" else 1
    cache = "KV cache" if cfg.cache or cfg.runtime != "torch" else "no KV cache"
    print(f"{n} tokens in {seconds:.2f} s: {n / max(seconds, 1e-9):.1f} tokens/s ({cfg.runtime}, {cache}, "
          f"{threads} thread{'s' if threads > 1 else ''})", file=sys.stderr)
