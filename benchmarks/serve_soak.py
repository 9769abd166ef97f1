"""Soak: `r1 serve` under mixed good / bad / slow / oversized / disconnecting traffic, with its
inference process killed twice (issue 17).

    python benchmarks/serve_soak.py [--model RUN] [--duration 600] [--concurrency 64] [--kills 2]

Closed-loop clients (asyncio, one connection per request) each pick a request kind by weight:

    good        a 32x32 PNG                          200, or 503 / 504 within its deadline
    bad         garbage bytes as image/png           400
    bomb        a ~75 KB PNG of 5000x5000 pixels     413 (read from the header)
    big_body    Content-Length over the body limit   413 (before the body is read)
    heavy       a 46 KB PNG of 4000x4000 pixels      200 / 503 / 504 (decoded by the worker)
    slow_body   the body one byte per 0.5 s          408 body_timeout
    slow_head   the head one byte per 0.5 s          408 header_timeout
    disconnect  half the body, then close            (no answer; counted 499 by the server)

Any answer may also be 503 (overloaded, worker restarting). A separate prober times GET /healthz
every 100 ms. Reports: counts per kind and status, unexpected answers (any 5xx other than
503/504, or a status the kind does not allow), good requests answered after their deadline, the
server's RSS (with its inference process) 10 s in and at the end, /healthz p50/p99, the worker
restarts the server counted. Writes benchmarks/results/serve_soak.json.
"""
from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from serve_bench import free_port, tiny_digits_model  # noqa: E402
from serve_overload import rss_mib  # noqa: E402

from r1.bench.latency import percentiles  # noqa: E402
from r1.bench.load import wait_ready  # noqa: E402
from r1.input_kinds.image import sample_png  # noqa: E402

WEIGHTS = {"good": 70, "bad": 6, "bomb": 4, "big_body": 3, "heavy": 3, "slow_body": 4, "slow_head": 4,
           "disconnect": 6}
ALLOWED = {"good": {200, 504}, "bad": {400}, "bomb": {413}, "big_body": {413}, "heavy": {200, 504},
           "slow_body": {408}, "slow_head": {408}, "disconnect": {None}}


def _png(w: int, h: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (w, h)).save(buf, format="PNG")
    return buf.getvalue()


def _head(length: int) -> bytes:
    return (f"POST /v1/predict HTTP/1.1\r\nHost: soak\r\nContent-Type: image/png\r\nConnection: close\r\n"
            f"Content-Length: {length}\r\n\r\n").encode()


class Traffic:
    def __init__(self, port: int, deadline_s: float):
        self.port, self.deadline_s = port, deadline_s
        self.bodies = {"good": sample_png(32), "bad": os.urandom(2048), "bomb": _png(5000, 5000),
                       "heavy": _png(4000, 4000)}
        self.results: list[tuple[str, int | None, float]] = []  # kind, status, seconds

    async def one(self, kind: str) -> None:
        t0 = time.perf_counter()
        status = None
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError:
            self.results.append((kind, -1, 0.0))
            return
        answer = asyncio.ensure_future(reader.readline())  # the server may answer before we finish
        try:
            if kind in ("good", "bad", "bomb", "heavy"):
                body = self.bodies[kind]
                writer.write(_head(len(body)) + body)
            elif kind == "big_body":
                writer.write(_head(64 << 20) + b"\0" * 1024)
            elif kind in ("slow_body", "slow_head"):
                trickle = _head(1000) + b"\0" * 1000 if kind == "slow_body" else _head(10)
                if kind == "slow_body":
                    writer.write(trickle[:len(_head(1000))])
                    trickle = trickle[len(_head(1000)):]
                for byte in trickle[:60]:  # 30 s at most; the server cuts it off first
                    await asyncio.wait({answer}, timeout=0.5)
                    if answer.done():
                        break
                    writer.write(bytes([byte]))
                    await writer.drain()
            elif kind == "disconnect":
                body = self.bodies["good"]
                writer.write(_head(len(body)) + body[: len(body) // 2])
                await writer.drain()
                await asyncio.sleep(0.05)
                answer.cancel()
                return
            await writer.drain()
            line = await asyncio.wait_for(answer, self.deadline_s + 30)
            status = int(line.split()[1]) if line else -1
            await reader.read()  # Connection: close
        except (ConnectionError, asyncio.TimeoutError, IndexError, ValueError):
            status = -1
            if answer.done() and not answer.cancelled() and answer.exception() is None and answer.result():
                status = int(answer.result().split()[1])  # answered, then reset while we still wrote
            answer.cancel()
        finally:
            writer.close()
            self.results.append((kind, status, time.perf_counter() - t0))

    async def client(self, stop_at: float, rng: random.Random) -> None:
        kinds, weights = zip(*WEIGHTS.items())
        while time.monotonic() < stop_at:
            await self.one(rng.choices(kinds, weights)[0])


async def probe_health(port: int, stop_at: float, out: list[float], codes: list[int]) -> None:
    while time.monotonic() < stop_at:
        t0 = time.perf_counter()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n")
            line = await reader.readline()
            await reader.read()
            writer.close()
            codes.append(int(line.split()[1]))
        except (OSError, IndexError, ValueError):
            codes.append(-1)
        out.append(time.perf_counter() - t0)
        await asyncio.sleep(0.1)


def inference_child(pid: int) -> int | None:
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            kids = f.read().split()
        if kids:
            return int(kids[-1])
    return None


async def kill_worker_at(pid: int, times: list[float], killed: list[float]) -> None:
    for at in times:
        await asyncio.sleep(max(0.0, at - time.monotonic()))
        child = inference_child(pid)
        if child is not None:
            os.kill(child, signal.SIGKILL)
            killed.append(at)


async def soak(port: int, pid: int, args) -> dict:
    start = time.monotonic()
    stop_at = start + args.duration
    traffic = Traffic(port, args.timeout_ms / 1000)
    health, health_codes, killed = [], [], []
    kill_times = [start + args.duration * (i + 1) / (args.kills + 1) for i in range(args.kills)]
    rss = {}

    async def sample_rss():
        await asyncio.sleep(min(10.0, args.duration / 4))
        rss["start_mib"] = rss_mib(pid)

    rng = random.Random(0)
    await asyncio.gather(*(traffic.client(stop_at, random.Random(rng.random())) for _ in range(args.concurrency)),
                         probe_health(port, stop_at, health, health_codes),
                         kill_worker_at(pid, kill_times, killed), sample_rss())
    rss["end_mib"] = rss_mib(pid)
    return summarize(traffic.results, health, health_codes, killed, rss, args)


def summarize(results, health, health_codes, killed, rss, args) -> dict:
    by_kind: dict[str, dict[str, int]] = {}
    unexpected, late = [], 0
    deadline = args.timeout_ms / 1000 + 2.0
    for kind, status, seconds in results:
        counts = by_kind.setdefault(kind, {})
        counts[str(status)] = counts.get(str(status), 0) + 1
        if status not in ALLOWED[kind] | {503} and not (kind == "disconnect" and status == -1):
            unexpected.append((kind, status))
        if kind == "good" and seconds > deadline:
            late += 1
    hp = percentiles(health) if health else {}
    return {"duration_s": args.duration, "concurrency": args.concurrency, "kills": len(killed),
            "requests": len(results), "by_kind": by_kind, "unexpected": len(unexpected),
            "unexpected_examples": unexpected[:10],
            "unexpected_5xx": sum(1 for _, s in unexpected if s is not None and s >= 500),
            "good_after_deadline": late, "rss_start_mib": round(rss.get("start_mib", 0), 1),
            "rss_end_mib": round(rss.get("end_mib", 0), 1),
            "rss_growth_pct": round(100 * (rss["end_mib"] / rss["start_mib"] - 1), 2) if rss.get("start_mib") else None,
            "healthz_p50_ms": round(hp.get("p50", 0) * 1000, 2), "healthz_p99_ms": round(hp.get("p99", 0) * 1000, 2),
            "healthz_not_200": sum(1 for c in health_codes if c != 200)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model")
    ap.add_argument("--duration", type=float, default=600.0)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--kills", type=int, default=2)
    ap.add_argument("--max-queue", type=int, default=64)
    ap.add_argument("--timeout-ms", type=float, default=5000.0)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/serve_soak.json")
    ap.add_argument("--log", type=Path, help="Also keep the server's log here")
    args = ap.parse_args()
    model = args.model or str(tiny_digits_model(Path(tempfile.mkdtemp(prefix="r1-soak-")) / "tiny"))
    port = free_port()
    cmd = [sys.executable, "-m", "r1.cli", "serve", model, "--port", str(port), "--max-batch", "8",
           "--max-queue", str(args.max_queue), "--timeout-ms", str(args.timeout_ms), "--max-body-mb", "8",
           "serve.header_timeout_s=3", "serve.body_timeout_s=3", "serve.restart_backoff_s=0.5"]
    log_file = tempfile.TemporaryFile("w+")  # a pipe left unread would block the server when full
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log_file, text=True)
    try:
        wait_ready(f"http://127.0.0.1:{port}", timeout=120)
        row = asyncio.run(soak(port, proc.pid, args))
        import httpx
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        row["server_restarts"] = sum(float(line.split()[-1]) for line in metrics.splitlines()
                                     if line.startswith("r1_worker_restarts_total "))
        row["server_499"] = sum(float(line.split()[-1]) for line in metrics.splitlines()
                                if line.startswith("r1_requests_total") and 'status="499"' in line)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
    log_file.seek(0)
    log = log_file.read()
    row["server_tracebacks"] = log.count("Traceback")
    if args.log:
        args.log.write_text(log)
    row["cpu"] = platform.processor() or platform.machine()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(row, indent=2))
    print(json.dumps(row, indent=2))


if __name__ == "__main__":
    main()
