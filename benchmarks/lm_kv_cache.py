"""KV-cache generation speed at a long context: R1-LM and the GPT baseline, each as its shakespeare
recipe builds it but with a 512-token context (random weights: speed does not depend on them).

    .venv/bin/python benchmarks/lm_kv_cache.py [--context 512] [--new-tokens 256] [--threads 1]

At the recipes' trained context of 64 (benchmarks/lm_vs_baseline.py) generation without a cache
recomputes at most 64 tokens per step, which caps what a cache can save; here it recomputes the
whole prefix, as a long-context deployment would. Prints one line per model.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from r1.config import load_config  # noqa: E402
from r1.models.lm.benchmark import generation_speed  # noqa: E402
from r1.registry import build_model  # noqa: E402

CONFIGS = ("configs/lm/shakespeare-char.yaml", "configs/lm/gpt-baseline-shakespeare.yaml")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--context", type=int, default=512)
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    for path in CONFIGS:
        cfg = load_config(ROOT / path, ["data.path=unused.txt"])
        torch.manual_seed(0)
        model = build_model(cfg.model, num_classes=65, block_size=args.context).eval()
        with torch.inference_mode():
            r = generation_speed(model, torch.randint(0, 65, (1, 1)), args.new_tokens)
        print(f"{cfg.model.name}: context {args.context}, {args.new_tokens} new tokens, batch 1: with cache "
              f"{r['cache']['tok_s']:.0f} tok/s, without {r['no_cache']['tok_s']:.0f} tok/s: {r['speedup']:.2f}x")


if __name__ == "__main__":
    main()
