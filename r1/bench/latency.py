"""In-process latency and throughput, reusable by the compression pipeline and the benchmarks.

    stats = measure_latency(predictor.run, batch, runs=30, warmup=5)
    # {"p50": s, "p95": s, "p99": s, "mean": s, "min": s, "runs": 30, "batch": B, "throughput": items/s}
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable

import numpy as np

log = logging.getLogger(__name__)


def percentiles(samples: list[float], qs=(50, 95, 99)) -> dict[str, float]:
    if not samples:
        return {f"p{q}": float("nan") for q in qs}
    arr = np.asarray(samples, np.float64)
    return {f"p{q}": float(np.percentile(arr, q)) for q in qs}


def measure_latency(fn: Callable, batch, runs: int = 30, warmup: int = 5, max_seconds: float = 60.0) -> dict:
    """Time `fn(batch)` `runs` times after `warmup` calls (stops early after `max_seconds`).

    Seconds per call; `throughput` = batch size / median (items per second)."""
    if runs < 1:
        raise ValueError("runs must be >= 1")
    for _ in range(warmup):
        fn(batch)
    times, deadline = [], time.perf_counter() + max_seconds
    for _ in range(runs):
        t0 = time.perf_counter()
        fn(batch)
        times.append(time.perf_counter() - t0)
        if time.perf_counter() > deadline:
            break
    n = int(len(batch)) if hasattr(batch, "__len__") else 1
    stats = {**percentiles(times), "mean": float(np.mean(times)), "min": float(np.min(times)),
             "runs": len(times), "batch": n}
    stats["throughput"] = n / stats["p50"] if stats["p50"] > 0 else float("inf")
    return stats


def sweep_batch_sizes(predictor, batch_sizes=(1, 8, 32), runs: int = 30, warmup: int = 5,
                      max_seconds: float = 30.0) -> list[dict]:
    """`measure_latency(predictor.run, batch)` for each batch size B, the batch made by the family's
    `example_inputs` (e.g. random normalised images (B, C, H, W))."""
    import torch

    from r1.family import get_family

    make = get_family(predictor.family).hook("example_inputs", "benchmark inputs")
    rows = []
    for b in batch_sizes:
        x = make(predictor.meta, b, torch.Generator().manual_seed(0))
        x = x.numpy() if isinstance(x, torch.Tensor) else x
        rows.append({"runtime": predictor.runtime, **measure_latency(predictor.run, x, runs, warmup, max_seconds)})
    return rows


def compare_runtimes(model_path: str | Path, batch_sizes=(1, 8, 32), runtimes=("torch", "onnx", "tensorrt"),
                     threads: int = 1, runs: int = 30, warmup: int = 5) -> list[dict]:
    """The deployment comparison: one row per (runtime, batch size); unavailable runtimes get one
    row with `unavailable` set to the reason. A run dir is exported to a temporary ONNX for `onnx`."""
    from r1.errors import R1Error
    from r1.family import get_family
    from r1.inference.predictor import Predictor

    rows = []
    for rt in runtimes:
        try:
            p = Predictor.load(model_path, runtime=rt, threads=threads)
        except R1Error as err:
            rows.append({"runtime": rt, "unavailable": str(err)})
            continue
        spec = get_family(p.family)
        if spec.bench is not None:  # the family's own measure (e.g. generation steps)
            rows += spec.hook("bench")(p, batch_sizes, runs)
        else:
            rows += sweep_batch_sizes(p, batch_sizes, runs, warmup)
    return rows
