"""Serving benchmark: dynamic batching vs --max-batch 1 vs in-process batched, one model, one run.

    python benchmarks/serve_bench.py [--model cls-tiny|det-small|RUN_DIR|MODEL.onnx] [--runtime torch|onnx]
                                     [--concurrency 32] [--duration 10] [--threads 1]
                                     [--inference process|thread|process,thread] [--skip-single]

Models: `cls-tiny` (default; R1 MobileNetV3 tiny, 32x32 digits input, random weights: speed does
not depend on them), `det-small` (r1_det small at 128x128, 10 classes: the teacher stage of
`r1 pipeline recipes/det-digits.yaml` (runs/det-digits/teacher) when it exists, else random weights,
with which no box passes the score threshold and the NMS cost is understated; the table says
which), or any run dir / .onnx. Requests carry a
random PNG at the model's input size (`--image-size` to change it); for the trained det-small,
digit scenes from its test split instead (noise makes a detector emit thousands of low-score
candidates, which no real request does).

Starts `r1 serve` twice per inference mode on loopback (dynamic batching, then --max-batch 1;
`process`: the model in a worker process, the default; `thread`: in the server), drives each with the
async load tool at the given concurrency, and measures the same runtime in-process at batch =
max-batch: `run()` alone, and decode + `predict()` (what the server does per image). The load
client shares the machine: `--pin 1:0` keeps it off the server's CPU (the server, its worker and
the in-process rows on CPU 1, the client on CPU 0), so server and in-process get the same CPU.
Writes benchmarks/results/<out>.json and .md and prints a markdown table.
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

import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from r1.bench.latency import measure_latency  # noqa: E402
from r1.bench.load import run_load, wait_ready  # noqa: E402
from r1.bench.report import markdown_table  # noqa: E402
from r1.inference.predictor import Predictor  # noqa: E402
from r1.input_kinds.image import sample_png  # noqa: E402

TRAINED_DET = ROOT / "runs/det-digits/teacher"  # written by `r1 pipeline recipes/det-digits.yaml`


def tiny_digits_model(out: Path) -> Path:
    from r1.artifacts import save_artifact
    from r1.registry import build_model

    torch.manual_seed(0)
    model = build_model("r1_mobilenetv3", flavor="tiny", num_classes=10, stem_stride=1).eval()
    meta = {"classes": [str(i) for i in range(10)], "num_classes": 10,
            "preprocess": {"size": [32, 32], "mean": [0.5] * 3, "std": [0.25] * 3}}
    save_artifact(model, out, meta)
    return out


def small_det_model(out: Path) -> Path:
    """r1_det small, random weights, 128x128 input, 10 classes (the det_digits setting)."""
    from r1.artifacts import save_artifact
    from r1.registry import build_model

    torch.manual_seed(0)
    model = build_model("r1_det", flavor="small", num_classes=10, input_size=128).eval()
    meta = {"classes": [str(i) for i in range(10)], "num_classes": 10,
            "preprocess": {"size": [128, 128], "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                           "letterbox": True}}
    save_artifact(model, out, meta)
    return out


def test_scenes(count: int) -> list[bytes]:
    """PNGs of the first `count` test scenes of det_digits (what the trained det-small model was trained on)."""
    from r1.models.det.data import DigitScenesConfig, det_digits

    test = det_digits(DigitScenesConfig(), seed=0).test
    out = []
    for i in range(count):
        buf = io.BytesIO()
        Image.fromarray(test.load(i % len(test)).permute(1, 2, 0).numpy()).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def request_images(name: str, model: str, image_size: int, count: int) -> tuple[list[bytes], str]:
    """-> (request PNGs, what they are)."""
    if name == "det-small" and Path(model) == TRAINED_DET:
        return test_scenes(count), "det_digits test-scene PNG requests"
    return [sample_png(image_size, seed=i) for i in range(count)], f"random {image_size}x{image_size} PNG requests"


def resolve_model(name: str) -> tuple[str, str]:
    """-> (path, description) for a builtin name or a path."""
    tmp = Path(tempfile.mkdtemp(prefix="r1-bench-"))
    if name == "cls-tiny":
        return str(tiny_digits_model(tmp / "tiny")), "r1_mobilenetv3 tiny (random weights), 32x32"
    if name == "det-small":
        if (TRAINED_DET / "model.safetensors").is_file():
            return str(TRAINED_DET), f"r1_det small, trained ({TRAINED_DET.relative_to(ROOT)}), 128x128"
        return str(small_det_model(tmp / "det")), "r1_det small (random weights: no boxes pass the threshold), 128x128"
    return name, name


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_and_load(model: str, runtime: str, max_batch: int, image: bytes, args, inference: str) -> dict:
    port = free_port()
    cmd = [sys.executable, "-m", "r1.cli", "serve", model, "--port", str(port), "--runtime", runtime,
           "--max-batch", str(max_batch), "--max-wait-ms", str(args.max_wait_ms), "--threads", str(args.threads),
           "--max-queue", str(max(256, 4 * args.concurrency)), "--inference", inference]
    pin = (lambda: os.sched_setaffinity(0, args.server_cpus)) if args.server_cpus else None
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=pin)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, timeout=180)
        run_load(url, args.concurrency, min(2.0, args.duration), 10_000, image=image)  # warm connections
        res = run_load(url, args.concurrency, args.duration, args.max_requests, image=image)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    return {"setup": f"server ({inference}), max-batch {max_batch}", "max_batch": max_batch, **res}


def in_process(model: str, runtime: str, blobs: list[bytes], args) -> list[dict]:
    p = Predictor.load(model, runtime=runtime, threads=args.threads)
    batch = len(blobs)
    x = p.preprocess([Image.open(io.BytesIO(b)).convert("RGB") for b in blobs])
    raw = measure_latency(p.run, x, runs=args.runs, warmup=5)

    def decode_predict(data: list[bytes]):
        return p.predict([Image.open(io.BytesIO(b)).convert("RGB") for b in data])

    full = measure_latency(decode_predict, blobs, runs=args.runs, warmup=5)
    keys = ("throughput", "p50", "p95", "p99", "runs")
    return [{"setup": f"in-process run(), batch {batch}", **{k: raw[k] for k in keys}},
            {"setup": f"in-process decode + predict(), batch {batch}", **{k: full[k] for k in keys}}]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="cls-tiny", help="cls-tiny, det-small, or a run dir / .onnx")
    ap.add_argument("--runtime", default="torch", choices=("torch", "onnx"))
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--max-requests", type=int, default=50_000)
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--max-wait-ms", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--inference", default="process",
                    help="process, thread, or both comma-separated (side by side in one run)")
    ap.add_argument("--image-size", type=int, help="side of the request PNG (default: the model's input)")
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--skip-single", action="store_true", help="skip the --max-batch 1 server")
    ap.add_argument("--pin", metavar="SERVER_CPUS:CLIENT_CPUS",
                    help="e.g. 1:0: the server (and its worker) and the in-process rows on CPU 1, the load "
                         "client on CPU 0, so the client does not take the server's CPU time")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/serve_bench.json")
    args = ap.parse_args()
    args.server_cpus = args.client_cpus = None
    if args.pin:
        try:
            server, client = ({int(c) for c in part.split(",")} for part in args.pin.split(":"))
        except ValueError:
            ap.error(f"--pin: expected SERVER_CPUS:CLIENT_CPUS such as 1:0 or 1:0,2, got {args.pin!r}")
        if not (server | client) <= os.sched_getaffinity(0):
            ap.error(f"--pin: CPUs {sorted((server | client) - os.sched_getaffinity(0))} are not available; "
                     f"this process may use {sorted(os.sched_getaffinity(0))}")
        args.server_cpus, args.client_cpus = server, client
    modes = [m for m in args.inference.split(",") if m]
    if not modes or set(modes) - {"process", "thread"}:
        ap.error(f"--inference: expected process and/or thread, got {args.inference!r}")
    torch.set_num_threads(args.threads)
    model, described = resolve_model(args.model)
    if args.runtime == "onnx" and not model.endswith(".onnx"):
        from r1.onnx.export import export_onnx
        onnx_path = Path(tempfile.mkdtemp(prefix="r1-bench-")) / "model.onnx"
        export_onnx(model, onnx_path)
        model = str(onnx_path)
    image_size = args.image_size or Predictor.load(model, runtime=args.runtime).input_shape[1]
    blobs, requests = request_images(args.model, model, image_size, args.max_batch)
    image = blobs[0]

    load_before = os.getloadavg()
    if args.server_cpus:  # the in-process rows get what the server gets
        os.sched_setaffinity(0, args.server_cpus)
    rows = in_process(model, args.runtime, blobs, args)
    if args.client_cpus:
        os.sched_setaffinity(0, args.client_cpus)
    summary = {}
    for mode in modes:
        dynamic = serve_and_load(model, args.runtime, args.max_batch, image, args, mode)
        rows.append(dynamic)
        summary[f"{mode}: dynamic_vs_in_process_run"] = dynamic["throughput"] / rows[0]["throughput"]
        summary[f"{mode}: dynamic_vs_in_process_predict"] = dynamic["throughput"] / rows[1]["throughput"]
        if not args.skip_single:
            single = serve_and_load(model, args.runtime, 1, image, args, mode)
            rows.append(single)
            summary[f"{mode}: dynamic_vs_max_batch_1"] = dynamic["throughput"] / max(single["throughput"], 1e-9)
    result = {"model": described, "runtime": args.runtime, "inference": modes,
              "concurrency": args.concurrency, "duration_s": args.duration, "threads": args.threads,
              "max_wait_ms": args.max_wait_ms, "image_size": image_size, "requests": requests, "pin": args.pin,
              "rows": rows, "summary": summary,
              "machine": {"cpus": os.cpu_count(), "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
                          "python": platform.python_version(), "torch": torch.__version__},
              "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
              "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    placement = (f"server + in-process rows on CPU {sorted(args.server_cpus)}, client on CPU "
                 f"{sorted(args.client_cpus)}, " if args.pin else "")
    shown = [{**r, "p50": r["p50"] * 1e3, "p95": r["p95"] * 1e3, "p99": r["p99"] * 1e3} for r in rows]
    text = "\n".join([
        f"`{result['command']}` ({result['time']}, {described}, runtime {args.runtime}, concurrency "
        f"{args.concurrency}, {args.threads} inference thread(s), {requests}, "
        f"{placement}"
        f"load average {load_before[0]:.1f} before / {result['machine']['loadavg_after'][0]:.1f} after "
        f"on {os.cpu_count()} CPUs)", "",
        markdown_table(shown, [("setup", "setup"), ("throughput", "items/s"), ("p50", "p50 ms"),
                               ("p95", "p95 ms"), ("p99", "p99 ms"), ("requests", "requests")]), "",
        *[f"- {k}: {v:.2f}x" for k, v in summary.items()]])
    args.out.with_suffix(".md").write_text(text + "\n")
    print(text + f"\n\nwrote {args.out} and {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
