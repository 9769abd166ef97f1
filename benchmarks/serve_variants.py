"""A/B + canary serving, measured over real HTTP on loopback (issue 15 section 1).

    taskset -c 1 python benchmarks/serve_variants.py [--requests 5000] [--overhead 1000]

1. Split: `stable=A canary=B --traffic stable=90,canary=10` (two R1 MobileNetV3 tiny runs, random
   weights, one worker process each), `--requests` sequential requests: the canary's share.
2. Rollback: the canary raises on 20% of inputs (tests/serve/helpers.py FlakyPredictor, in a worker
   process), 90/10, default rules (window 100, at least 20 requests, 2%): requests until its
   weight is 0 (all, and the canary's), errors clients saw before and after (retry_on_stable on).
3. Overhead: a single-model server and a two-variant server (90/10, same model) up at the same time;
   requests alternate between them (concurrency 1): p50/p95 of each, same run, interleaved.
Prints a markdown summary.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.serve_bench import tiny_digits_model  # noqa: E402
from r1.bench.load import wait_ready  # noqa: E402
from r1.serve import ServeConfig, create_app  # noqa: E402
from tests.serve.helpers import VariantLoader, png_bytes, running_server  # noqa: E402

IMAGE, BAD = png_bytes((32, 32)), png_bytes((7, 8))


def post(client, url, image=IMAGE):
    return client.post(url + "/v1/predict", content=image, headers={"content-type": "image/png"})


def split(a: Path, b: Path, n: int) -> dict:
    cfg = ServeConfig(variants={"stable": str(a), "canary": str(b)}, traffic={"stable": 90, "canary": 10})
    with running_server(create_app(cfg)) as (url, _), httpx.Client(timeout=30) as client:
        wait_ready(url, timeout=120)
        names = [post(client, url).json()["variant"] for _ in range(n)]
    return {"requests": n, "canary_share": names.count("canary") / n}


def rollback() -> dict:
    cfg = ServeConfig(variants={"stable": "runs/good", "canary": "runs/flaky"}, traffic={"stable": 90, "canary": 10},
                      warmup_runs=0)
    statuses, sent = [], 0
    with running_server(create_app(cfg, VariantLoader())) as (url, _), httpx.Client(timeout=30) as client:
        wait_ready(url, timeout=120)
        while True:
            image = BAD if sent % 5 == 0 else png_bytes((8, 8))
            statuses.append(post(client, url, image).status_code)
            sent += 1
            rows = {v["name"]: v for v in client.get(url + "/v1/variants").json()["variants"]}
            if rows["canary"]["weight"] == 0 or sent > 5000:
                break
        after = [post(client, url, BAD if i % 5 == 0 else IMAGE).status_code for i in range(500)]
    return {"requests_until_rollback": sent, "canary_requests_until_rollback": rows["canary"]["requests"],
            "canary_errors": rows["canary"]["errors"], "reason": rows["canary"]["rolled_back"],
            "client_errors_before": sum(s != 200 for s in statuses), "client_errors_after_500": sum(s != 200 for s in after)}


def overhead(a: Path, b: Path, n: int) -> dict:
    single = create_app(ServeConfig(model=str(a)))
    routed = create_app(ServeConfig(variants={"stable": str(a), "canary": str(b)}, traffic={"stable": 90, "canary": 10}))
    times: dict[str, list[float]] = {"single": [], "variants": []}
    with running_server(single) as (u1, _), running_server(routed) as (u2, _), httpx.Client(timeout=30) as client:
        wait_ready(u1, timeout=120)
        wait_ready(u2, timeout=120)
        for _ in range(50):  # warm both
            post(client, u1), post(client, u2)
        for i in range(n):
            order = (("single", u1), ("variants", u2)) if i % 2 else (("variants", u2), ("single", u1))
            for name, url in order:
                t0 = time.perf_counter()
                assert post(client, url).status_code == 200
                times[name].append((time.perf_counter() - t0) * 1000)

    def pct(xs, q):
        xs = sorted(xs)
        return xs[min(len(xs) - 1, int(q * len(xs)))]

    return {name: {"p50_ms": statistics.median(xs), "p95_ms": pct(xs, 0.95)} for name, xs in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=5000)
    ap.add_argument("--overhead", type=int, default=1000)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        a = tiny_digits_model(Path(tmp) / "digits-a")
        b = tiny_digits_model(Path(tmp) / "digits-b")
        s = split(a, b, args.requests)
        r = rollback()
        o = overhead(a, b, args.overhead)
    print(f"machine: {platform.processor() or platform.machine()}")
    print(f"split: {s['requests']} requests at 90/10 -> canary {s['canary_share']:.2%}")
    print(f"rollback: {r}")
    for name, row in o.items():
        print(f"overhead {name}: p50 {row['p50_ms']:.2f} ms, p95 {row['p95_ms']:.2f} ms")


if __name__ == "__main__":
    main()
