"""Overload: a server with a small --max-queue under far more concurrent clients than it can serve.

    python benchmarks/serve_overload.py [--model RUN] [--max-queue 8] [--concurrency 64,256] [--duration 8]

Reports per concurrency level the status counts (excess requests must get 503, not wait), the
p50 latency of the 503 answers, and the server's resident memory before and at its peak (it must
stay bounded). Writes benchmarks/results/serve_overload.json.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from serve_bench import free_port, tiny_digits_model  # noqa: E402

from r1.bench.load import run_load, wait_ready  # noqa: E402


def rss_mib(pid: int) -> float:
    """Resident memory of `pid` and its descendants (the server and its inference process)."""
    total = 0.0
    try:
        with open(f"/proc/{pid}/status") as f:
            total = next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                total += sum(rss_mib(int(c)) for c in f.read().split())
    except (OSError, StopIteration):  # exited meanwhile
        pass
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model")
    ap.add_argument("--max-queue", type=int, default=8)
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--concurrency", default="64,256")
    ap.add_argument("--duration", type=float, default=8.0)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/serve_overload.json")
    args = ap.parse_args()
    model = args.model or str(tiny_digits_model(Path(tempfile.mkdtemp(prefix="r1-bench-")) / "tiny"))
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "r1.cli", "serve", model, "--port", str(port),
                             "--max-batch", str(args.max_batch), "--max-queue", str(args.max_queue)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    samples, stop = [], threading.Event()

    def sample():
        while not stop.is_set():
            samples.append(rss_mib(proc.pid))
            time.sleep(0.05)

    try:
        wait_ready(url, timeout=180)
        before = rss_mib(proc.pid)
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        rows = [run_load(url, int(c), args.duration, 10**6) for c in args.concurrency.split(",")]
        stop.set()
        sampler.join()
    finally:
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=30)
    result = {"max_queue": args.max_queue, "max_batch": args.max_batch, "rows": rows,
              "rss_mib_before": before, "rss_mib_peak": max(samples), "server_exit_code": rc,
              "loadavg": os.getloadavg(), "command": " ".join(sys.argv)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    for r in rows:
        print(f"concurrency {r['concurrency']}: {r['requests']} requests, status {r['status']}, "
              f"200/s {r['throughput']:.1f}, p50 of 200s {r['p50'] * 1e3:.1f} ms, "
              f"p50 of the others (503) {r['p50_failed'] * 1e3:.1f} ms")
    print(f"server + inference process RSS before {before:.0f} MiB, peak {max(samples):.0f} MiB; "
          f"exit code {rc}; wrote {args.out}")


if __name__ == "__main__":
    main()
