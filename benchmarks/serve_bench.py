"""Serving benchmark: dynamic batching vs --max-batch 1 vs in-process batched, one model, one run.

    python benchmarks/serve_bench.py [--model runs/digits] [--runtime torch|onnx] [--concurrency 32]
                                     [--duration 10] [--threads 1]

Without --model it uses the classification tiny model (R1 MobileNetV3 tiny, 32x32 digits input,
random weights: speed does not depend on them). Starts `r1 serve` twice on loopback (dynamic
batching, then --max-batch 1), drives each with the async load tool at the given concurrency,
and measures the same runtime in-process at batch = max-batch. Writes
benchmarks/results/serve_bench.json and prints a markdown table.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from r1.bench.latency import measure_latency  # noqa: E402
from r1.bench.load import run_load, sample_png, wait_ready  # noqa: E402
from r1.bench.report import markdown_table  # noqa: E402
from r1.export.runtime import Predictor  # noqa: E402


def tiny_digits_model(out: Path) -> Path:
    from r1.artifacts import save_artifact
    from r1.registry import build_model

    torch.manual_seed(0)
    model = build_model("r1_mobilenetv3", flavor="tiny", num_classes=10, stem_stride=1).eval()
    meta = {"classes": [str(i) for i in range(10)], "num_classes": 10,
            "preprocess": {"size": [32, 32], "mean": [0.5] * 3, "std": [0.25] * 3}}
    save_artifact(model, out, meta)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_and_load(model: str, runtime: str, max_batch: int, args) -> dict:
    port = free_port()
    cmd = [sys.executable, "-m", "r1.cli", "serve", model, "--port", str(port), "--runtime", runtime,
           "--max-batch", str(max_batch), "--max-wait-ms", str(args.max_wait_ms), "--threads", str(args.threads),
           "--max-queue", str(max(256, 4 * args.concurrency))]
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, timeout=180)
        run_load(url, args.concurrency, 2.0, 10_000)  # warm connections and the server's code paths
        res = run_load(url, args.concurrency, args.duration, args.max_requests, image=sample_png(32))
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    return {"setup": f"server, max-batch {max_batch}", "max_batch": max_batch, **res}


def in_process(model: str, runtime: str, batch: int, args) -> list[dict]:
    p = Predictor.load(model, runtime=runtime, threads=args.threads)
    x = np.random.default_rng(0).standard_normal((batch, *p.input_shape)).astype(np.float32)
    raw = measure_latency(p.run, x, runs=args.runs, warmup=5)
    images = [Image.open(io.BytesIO(sample_png(32, seed=i))).convert("RGB") for i in range(batch)]
    full = measure_latency(lambda ims: p.predict(ims), images, runs=args.runs, warmup=5)
    return [{"setup": f"in-process run(), batch {batch}", "throughput": raw["throughput"], "p50": raw["p50"],
             "p95": raw["p95"], "p99": raw["p99"], "runs": raw["runs"]},
            {"setup": f"in-process predict() (pre+post), batch {batch}", "throughput": full["throughput"],
             "p50": full["p50"], "p95": full["p95"], "p99": full["p99"], "runs": full["runs"]}]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="run dir / .safetensors / .onnx (default: tiny digits model)")
    ap.add_argument("--runtime", default="torch", choices=("torch", "onnx"))
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--max-requests", type=int, default=50_000)
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--max-wait-ms", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/serve_bench.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = args.model or str(tiny_digits_model(Path(tempfile.mkdtemp(prefix="r1-bench-")) / "tiny"))
    if args.runtime == "onnx" and not model.endswith(".onnx"):
        from r1.export.onnx import export_onnx
        onnx_path = Path(tempfile.mkdtemp(prefix="r1-bench-")) / "model.onnx"
        export_onnx(model, onnx_path)
        model = str(onnx_path)

    load_before = os.getloadavg()
    rows = in_process(model, args.runtime, args.max_batch, args)
    dynamic = serve_and_load(model, args.runtime, args.max_batch, args)
    single = serve_and_load(model, args.runtime, 1, args)
    rows += [dynamic, single]
    summary = {"dynamic_vs_max_batch_1": dynamic["throughput"] / max(single["throughput"], 1e-9),
               "dynamic_vs_in_process_run": dynamic["throughput"] / rows[0]["throughput"],
               "dynamic_vs_in_process_predict": dynamic["throughput"] / rows[1]["throughput"]}
    result = {"model": args.model or "r1_mobilenetv3 tiny (random weights), 32x32", "runtime": args.runtime,
              "concurrency": args.concurrency, "duration_s": args.duration, "threads": args.threads,
              "max_wait_ms": args.max_wait_ms, "rows": rows, "summary": summary,
              "machine": {"cpus": os.cpu_count(), "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
                          "python": platform.python_version(), "torch": torch.__version__},
              "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
              "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    shown = [{**r, "p50": r["p50"] * 1e3, "p95": r["p95"] * 1e3, "p99": r["p99"] * 1e3} for r in rows]
    text = "\n".join([
        f"`{result['command']}` ({result['time']}, runtime {args.runtime}, concurrency {args.concurrency}, "
        f"{args.threads} inference thread(s), load average {load_before[0]:.1f} on {os.cpu_count()} CPUs)", "",
        markdown_table(shown, [("setup", "setup"), ("throughput", "items/s"), ("p50", "p50 ms"),
                               ("p95", "p95 ms"), ("p99", "p99 ms"), ("requests", "requests")]), "",
        *[f"- {k}: {v:.2f}x" for k, v in summary.items()]])
    args.out.with_suffix(".md").write_text(text + "\n")
    print(text + f"\n\nwrote {args.out} and {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
