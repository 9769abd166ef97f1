"""The lm family's speed measurement (`FamilySpec.bench`): generation steps, not one forward pass.

    rows = bench_generation(r1.load(run), batch_sizes=[1, 8], runs=20)
    # one row per batch size: p50/p95/mean/min seconds per generation step (one new token for each of
    # the B prompts, KV cache, greedy, the prompt's prefill included), throughput = B / p50 tokens/s

`r1 bench RUN` and the pipeline's bench stage use it for every language-model row (torch, onnx,
onnx-int8): tokens/s at batch 1 and 8 beside the generic params, size and validation loss.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from r1.bench.latency import percentiles

UNIT = "tokens"
NOTE = ("latency = ms per generation step (one new token for each prompt of the batch: at batch 1, ms per "
        "generated token), throughput = tokens/s (KV cache, greedy, {new} new tokens after {prompt}-token prompts "
        "per run, prefill included; torch runs the model's default early exit)")


def bench_generation(predictor, batch_sizes=(1, 8), runs: int = 20, warmup: int = 1, new_tokens: int = 32,
                     prompt_tokens: int = 8, max_seconds: float = 60.0) -> list[dict]:
    """Seconds per generation step of `predictor` (anything with `token_batches(ids, n)` and `meta`),
    `runs` generations of `new_tokens` per batch size after `warmup` ones (stops early after `max_seconds`)."""
    vocab = int(predictor.meta["vocab_size"])
    rows = []
    for b in batch_sizes:
        g = torch.Generator().manual_seed(b)
        ids = torch.randint(0, vocab, (b, prompt_tokens), generator=g).numpy()

        def generate(ids=ids) -> None:
            for _ in predictor.token_batches(ids, new_tokens):
                pass

        times, deadline = [], time.perf_counter() + max_seconds
        with torch.inference_mode():
            for _ in range(warmup):
                generate()
            for _ in range(runs):
                t0 = time.perf_counter()
                generate()
                times.append((time.perf_counter() - t0) / new_tokens)
                if time.perf_counter() > deadline:
                    break
        stats = {**percentiles(times), "mean": float(np.mean(times)), "min": float(np.min(times))}
        rows.append({"runtime": predictor.runtime, **stats, "runs": len(times), "batch": b,
                     "throughput": b / stats["p50"], "unit": UNIT,
                     "note": NOTE.format(new=new_tokens, prompt=prompt_tokens)})
    return rows
