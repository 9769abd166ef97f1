"""Soak: `r1 serve` under mixed good / bad / slow / oversized / disconnecting traffic, with its
inference process killed twice (issue 17), canaries that fail (issue 30) and floods of prompt lists
and large pictures (issue 30).

    python benchmarks/serve_soak.py [--model RUN] [--duration 600] [--concurrency 64] [--kills 2]

The image server runs three variants: `stable` (the model), `broken` (the same model with NaN weights:
it cannot load and must be rolled back at once) and `hung` (a copy whose inference process is stopped
with SIGSTOP a fifth of the way in: its requests time out and must be answered by `stable`), traffic
80/10/10. Halfway through, a burst of `--large-burst` 4096x4096 PNGs (~50 KB each) arrives at once, on
top of the clients' own large pictures. A second server serves a tiny language model (`--lm-concurrency`
clients): single prompts, prompt lists over `serve.max_prompts`, prompt lists that fill the queue, lists
abandoned mid-generation, deep JSON and huge stop strings; its single prompts must keep their deadline.

Closed-loop clients (asyncio, one connection per request) each pick a request kind by weight:

    good        a 32x32 PNG                          200, or 503 / 504 within its deadline
    bad         garbage bytes as image/png           400
    bomb        a ~75 KB PNG of 5000x5000 pixels     413 (read from the header)
    big_body    Content-Length over the body limit   413 (before the body is read)
    heavy       a 46 KB PNG of 4000x4000 pixels      200 / 503 / 504 (decoded by the worker)
    slow_body   the body one byte per 0.5 s          408 body_timeout
    slow_head   the head one byte per 0.5 s          408 header_timeout
    disconnect  half the body, then close            (no answer; counted 499 by the server)
    large       a ~50 KB PNG of 4096x4096 pixels     200 / 503 / 504 (the pixel budget queues them)

Any answer may also be 503 (overloaded, worker restarting). A separate prober times GET /healthz
every 100 ms. Reports: counts per kind and status, unexpected answers (any 5xx other than
503/504, or a status the kind does not allow), errors answered by a non-stable variant (its
X-R1-Variant; none may reach a client), good requests answered after their deadline, the server's
RSS (with its inference processes) 10 s in, at the end and at its peak, and its peak PSS (shared
library pages counted once, as a container's memory limit counts them; sampled every second; the
Kubernetes manifest's limit is 2 GiB for one model, the soak serves three variants), /healthz p50/p99, the worker restarts and rollbacks the
server counted, and the language-model server's counts. Writes benchmarks/results/serve_soak.json.
"""
from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import random
import shutil
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

WEIGHTS = {"good": 68, "bad": 6, "bomb": 4, "big_body": 3, "heavy": 3, "large": 2, "slow_body": 4, "slow_head": 4,
           "disconnect": 6}
ALLOWED = {"good": {200, 504}, "bad": {400}, "bomb": {413}, "big_body": {413}, "heavy": {200, 504},
           "large": {200, 504}, "burst": {200, 504}, "slow_body": {408}, "slow_head": {408}, "disconnect": {None}}
STABLE = "stable"
RSS_LIMIT_MIB = 2048  # deploy/k8s/r1-serve.yaml: limits.memory 2Gi (compared with the PSS: shared pages once)
LM_WEIGHTS = {"complete": 70, "list_too_long": 6, "list_flood": 8, "list_abandon": 6, "deep_json": 5, "long_stop": 5}
LM_ALLOWED = {"complete": {200, 504}, "list_too_long": {400}, "list_flood": {200, 504}, "list_abandon": {None},
              "deep_json": {400}, "long_stop": {400}}


def _png(w: int, h: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (w, h)).save(buf, format="PNG")
    return buf.getvalue()


def _head(length: int) -> bytes:
    return (f"POST /v1/predict HTTP/1.1\r\nHost: soak\r\nContent-Type: image/png\r\nConnection: close\r\n"
            f"Content-Length: {length}\r\n\r\n").encode()


def _variant(head: bytes) -> str | None:
    """The X-R1-Variant of a response head."""
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"x-r1-variant":
            return value.strip().decode()
    return None


class Traffic:
    def __init__(self, port: int, deadline_s: float):
        self.port, self.deadline_s = port, deadline_s
        self.bodies = {"good": sample_png(32), "bad": os.urandom(2048), "bomb": _png(5000, 5000),
                       "heavy": _png(4000, 4000), "large": _png(4096, 4096)}
        self.bodies["burst"] = self.bodies["large"]
        self.results: list[tuple[str, int | None, float, str | None]] = []  # kind, status, seconds, variant

    async def one(self, kind: str) -> None:
        t0 = time.perf_counter()
        status, variant = None, None
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError:
            self.results.append((kind, -1, 0.0, None))
            return
        answer = asyncio.ensure_future(reader.readline())  # the server may answer before we finish
        try:
            if kind in ("good", "bad", "bomb", "heavy", "large", "burst"):
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
            variant = _variant(await reader.read())  # Connection: close
        except (ConnectionError, asyncio.TimeoutError, IndexError, ValueError):
            status = -1
            if answer.done() and not answer.cancelled() and answer.exception() is None and answer.result():
                status = int(answer.result().split()[1])  # answered, then reset while we still wrote
            answer.cancel()
        finally:
            writer.close()
            self.results.append((kind, status, time.perf_counter() - t0, variant))

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


def inference_child(pid: int, variant: str = STABLE) -> int | None:
    """The inference process of `variant` (its process name is r1w-<variant>)."""
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            kids = [int(k) for k in f.read().split()]
        for kid in kids:
            try:
                with open(f"/proc/{kid}/comm") as f:
                    if f.read().strip() == f"r1w-{variant}"[:15]:
                        return kid
            except OSError:
                continue
    return None


async def kill_worker_at(pid: int, times: list[float], killed: list[float]) -> None:
    for at in times:
        await asyncio.sleep(max(0.0, at - time.monotonic()))
        child = inference_child(pid)
        if child is not None:
            os.kill(child, signal.SIGKILL)
            killed.append(at)


async def hang_canary_at(pid: int, at: float, hung: list[int]) -> None:
    """SIGSTOP the `hung` canary's inference process: its requests time out (its supervisor kills and
    restarts it after serve.stuck_after_s)."""
    await asyncio.sleep(max(0.0, at - time.monotonic()))
    child = inference_child(pid, "hung")
    if child is not None:
        os.kill(child, signal.SIGSTOP)
        hung.append(child)


async def large_burst_at(traffic: Traffic, at: float, n: int) -> None:
    """`n` large pictures at once (issue 30: 64 concurrent 4096x4096 PNGs grew a worker to 5 GB)."""
    await asyncio.sleep(max(0.0, at - time.monotonic()))
    await asyncio.gather(*(traffic.one("burst") for _ in range(n)))


def pss_mib(pid: int) -> float:
    """Proportional set size of `pid` and its descendants: shared pages (the torch libraries every
    process maps) counted once overall, as the container's memory limit counts them."""
    total = 0.0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            total = next(int(line.split()[1]) for line in f if line.startswith("Pss:")) / 1024
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                total += sum(pss_mib(int(c)) for c in f.read().split())
    except (OSError, StopIteration):  # exited meanwhile
        pass
    return total


async def sample_rss_every(pid: int, stop_at: float, out: dict) -> None:
    while time.monotonic() < stop_at:
        out["max_mib"] = max(out.get("max_mib", 0.0), rss_mib(pid))
        out["pss_max_mib"] = max(out.get("pss_max_mib", 0.0), pss_mib(pid))
        await asyncio.sleep(1.0)


async def soak(port: int, pid: int, args, lm_port: int | None = None) -> dict:
    start = time.monotonic()
    stop_at = start + args.duration
    traffic = Traffic(port, args.timeout_ms / 1000)
    health, health_codes, killed, hung = [], [], [], []
    kill_times = [start + args.duration * (i + 1) / (args.kills + 1) for i in range(args.kills)]
    rss = {}

    async def sample_rss():
        await asyncio.sleep(min(10.0, args.duration / 4))
        rss["start_mib"] = rss_mib(pid)

    rng = random.Random(0)
    lm = LMTraffic(lm_port, args.timeout_ms / 1000) if lm_port else None
    await asyncio.gather(*(traffic.client(stop_at, random.Random(rng.random())) for _ in range(args.concurrency)),
                         *(lm.client(stop_at, random.Random(rng.random())) for _ in range(args.lm_concurrency if lm
                                                                                           else 0)),
                         probe_health(port, stop_at, health, health_codes),
                         kill_worker_at(pid, kill_times, killed), sample_rss(), sample_rss_every(pid, stop_at, rss),
                         *([hang_canary_at(pid, start + args.duration / 5, hung)] if args.canaries else []),
                         *([large_burst_at(traffic, start + args.duration * 0.55, args.large_burst)]
                           if args.large_burst else []))
    rss["end_mib"] = rss_mib(pid)
    row = summarize(traffic.results, health, health_codes, killed, rss, args)
    row["canary_hung"] = bool(hung)
    if lm is not None:
        row["lm"] = lm.summarize()
    return row


def summarize(results, health, health_codes, killed, rss, args) -> dict:
    by_kind: dict[str, dict[str, int]] = {}
    unexpected, late, canary_errors = [], 0, []
    deadline = args.timeout_ms / 1000 + 2.0
    for kind, status, seconds, variant in results:
        counts = by_kind.setdefault(kind, {})
        counts[str(status)] = counts.get(str(status), 0) + 1
        if status not in ALLOWED[kind] | {503} and not (kind == "disconnect" and status == -1):
            unexpected.append((kind, status))
        if variant not in (None, STABLE) and status is not None and (status >= 500 or status not in ALLOWED[kind]):
            canary_errors.append((kind, status, variant))
        if kind == "good" and seconds > deadline:
            late += 1
    hp = percentiles(health) if health else {}
    return {"duration_s": args.duration, "concurrency": args.concurrency, "kills": len(killed),
            "requests": len(results), "by_kind": by_kind, "unexpected": len(unexpected),
            "unexpected_examples": unexpected[:10],
            "unexpected_5xx": sum(1 for _, s in unexpected if s is not None and s >= 500),
            "canary_errors": len(canary_errors), "canary_error_examples": canary_errors[:10],
            "good_after_deadline": late, "rss_start_mib": round(rss.get("start_mib", 0), 1),
            "rss_end_mib": round(rss.get("end_mib", 0), 1), "rss_max_mib": round(rss.get("max_mib", 0), 1),
            "pss_max_mib": round(rss.get("pss_max_mib", 0), 1), "memory_limit_mib": RSS_LIMIT_MIB,
            "rss_growth_pct": round(100 * (rss["end_mib"] / rss["start_mib"] - 1), 2) if rss.get("start_mib") else None,
            "healthz_p50_ms": round(hp.get("p50", 0) * 1000, 2), "healthz_p99_ms": round(hp.get("p99", 0) * 1000, 2),
            "healthz_not_200": sum(1 for c in health_codes if c != 200)}


class LMTraffic:
    """/v1/completions clients of the language-model server (issue 30: prompt-list floods)."""

    def __init__(self, port: int, deadline_s: float):
        self.port, self.deadline_s = port, deadline_s
        self.results: list[tuple[str, int | None, float]] = []

    def body(self, kind: str, rng: random.Random) -> bytes:
        words = "to be or not that is the question".split()
        prompt = lambda: " ".join(rng.choice(words) for _ in range(4))  # noqa: E731
        if kind == "complete":
            return json.dumps({"prompt": prompt(), "max_tokens": 8, "temperature": 0}).encode()
        if kind == "list_too_long":
            return json.dumps({"prompt": [prompt() for _ in range(400)], "max_tokens": 3}).encode()
        if kind == "list_flood":
            return json.dumps({"prompt": [prompt() for _ in range(16)], "max_tokens": 48}).encode()
        if kind == "list_abandon":
            return json.dumps({"prompt": [prompt() for _ in range(8)], "max_tokens": 200}).encode()
        if kind == "deep_json":
            return b'{"prompt": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
        return json.dumps({"prompt": prompt(), "stop": "x" * 100_000}).encode()  # long_stop

    async def one(self, kind: str, rng: random.Random) -> None:
        body = self.body(kind, rng)
        t0, status = time.perf_counter(), None
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError:
            self.results.append((kind, -1, 0.0))
            return
        try:
            writer.write((f"POST /v1/completions HTTP/1.1\r\nHost: soak\r\nContent-Type: application/json\r\n"
                          f"Connection: close\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body)
            await writer.drain()
            if kind == "list_abandon":  # gone while its prompts generate: they must stop
                await asyncio.sleep(0.3)
                return
            line = await asyncio.wait_for(reader.readline(), self.deadline_s + 30)
            status = int(line.split()[1]) if line else -1
            await reader.read()
        except (ConnectionError, asyncio.TimeoutError, IndexError, ValueError):
            status = -1
        finally:
            writer.close()
            self.results.append((kind, status, time.perf_counter() - t0))

    async def client(self, stop_at: float, rng: random.Random) -> None:
        kinds, weights = zip(*LM_WEIGHTS.items())
        while time.monotonic() < stop_at:
            await self.one(rng.choices(kinds, weights)[0], rng)

    def summarize(self) -> dict:
        by_kind: dict[str, dict[str, int]] = {}
        unexpected, late = [], 0
        for kind, status, seconds in self.results:
            counts = by_kind.setdefault(kind, {})
            counts[str(status)] = counts.get(str(status), 0) + 1
            if status not in LM_ALLOWED[kind] | {503}:
                unexpected.append((kind, status))
            if kind == "complete" and seconds > self.deadline_s + 2.0:
                late += 1
        complete = sorted(s for k, st, s in self.results if k == "complete" and st == 200)
        p = percentiles(complete) if complete else {}
        return {"requests": len(self.results), "by_kind": by_kind, "unexpected": len(unexpected),
                "unexpected_examples": unexpected[:10],
                "unexpected_5xx": sum(1 for _, st in unexpected if st is not None and st >= 500),
                "complete_after_deadline": late, "complete_p50_ms": round(p.get("p50", 0) * 1000, 1),
                "complete_p99_ms": round(p.get("p99", 0) * 1000, 1)}


def broken_copy(model: Path, out: Path) -> Path:
    """`model` with NaN weights: it fails the server's warm-up check (a canary that cannot load)."""
    from safetensors.torch import load_file, save_file

    out.mkdir(parents=True, exist_ok=True)
    for f in ("model.json", "config.yaml"):
        if (model / f).is_file():
            shutil.copy2(model / f, out / f)
    weights = load_file(str(model / "model.safetensors"))
    for t in weights.values():
        if t.is_floating_point():
            t.fill_(float("nan"))
    save_file(weights, str(out / "model.safetensors"))
    info = json.loads((out / "model.json").read_text())
    info.pop("weights_sha256", None)  # the NaN weights are what they are: loading must not refuse them for it
    (out / "model.json").write_text(json.dumps(info))
    return out


def tiny_lm_model(out: Path) -> Path:
    """A random tiny R1-LM with a character tokenizer (what tests/serve serves)."""
    import torch

    from r1.artifacts import save_artifact
    from r1.models.lm.tokenizer import CharTokenizer
    from r1.registry import build_model

    torch.manual_seed(0)
    tok = CharTokenizer("abcdefghijklmnopqrstuvwxyz .,\n", specials=["<|endoftext|>"])
    model = build_model("r1_lm", flavor="tiny", num_classes=tok.vocab_size).eval()
    save_artifact(model, out, {"task": "lm", "tokenizer": tok.to_dict(), "vocab_size": tok.vocab_size})
    return out


def start_server(args_list: list[str], port: int, log_file):
    cmd = [sys.executable, "-m", "r1.cli", "serve", *args_list, "--port", str(port)]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log_file, text=True)


def stop(proc) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()


def counter(metrics: str, prefix: str) -> float:
    return sum(float(line.split()[-1]) for line in metrics.splitlines() if line.startswith(prefix))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model")
    ap.add_argument("--duration", type=float, default=600.0)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--kills", type=int, default=2)
    ap.add_argument("--max-queue", type=int, default=64)
    ap.add_argument("--timeout-ms", type=float, default=5000.0)
    ap.add_argument("--canaries", action=argparse.BooleanOptionalAction, default=True,
                    help="Serve the broken and hung canaries beside the model")
    ap.add_argument("--large-burst", type=int, default=64, help="Large pictures sent at once halfway (0: none)")
    ap.add_argument("--lm-concurrency", type=int, default=8, help="Clients of the language-model server (0: none)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/serve_soak.json")
    ap.add_argument("--log", type=Path, help="Also keep the servers' log here")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="r1-soak-"))
    model = Path(args.model or tiny_digits_model(tmp / "tiny"))
    served = [str(model)]
    if args.canaries:
        hung = tmp / "hung"
        shutil.copytree(model, hung, ignore=shutil.ignore_patterns(".r1-run", "onnx"))
        served = [f"{STABLE}={model}", f"broken={broken_copy(model, tmp / 'broken')}", f"hung={hung}",
                  "--traffic", f"{STABLE}=80,broken=10,hung=10"]
    port, lm_port = free_port(), free_port() if args.lm_concurrency else None
    log_file = tempfile.TemporaryFile("w+")  # a pipe left unread would block the server when full
    common = ["--max-queue", str(args.max_queue), "--timeout-ms", str(args.timeout_ms), "--max-body-mb", "8",
              "serve.header_timeout_s=3", "serve.body_timeout_s=3", "serve.restart_backoff_s=0.5"]
    proc = start_server([*served, "--max-batch", "8", *common], port, log_file)
    lm_proc = None
    if lm_port:
        lm = tiny_lm_model(tmp / "poet")
        lm_proc = start_server([str(lm), "--max-batch", "4", "--max-new-tokens", "256", *common], lm_port, log_file)
    try:
        wait_ready(f"http://127.0.0.1:{port}", timeout=180)
        if lm_port:
            wait_ready(f"http://127.0.0.1:{lm_port}", timeout=180)
        row = asyncio.run(soak(port, proc.pid, args, lm_port))
        import httpx
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        row["server_restarts"] = counter(metrics, "r1_worker_restarts_total ")
        row["server_499"] = sum(float(line.split()[-1]) for line in metrics.splitlines()
                                if line.startswith("r1_requests_total") and 'status="499"' in line)
        row["rollbacks"] = {v["name"]: v["rolled_back"] for v in
                            httpx.get(f"http://127.0.0.1:{port}/v1/variants").json()["variants"] if v["rolled_back"]}
        row["retries_on_stable"] = counter(metrics, "r1_variant_retries_total")
        if lm_port:
            lm_metrics = httpx.get(f"http://127.0.0.1:{lm_port}/metrics").text
            row["lm"]["server_cancelled"] = counter(lm_metrics, "r1_cancelled_total")
            row["lm"]["rss_end_mib"] = round(rss_mib(lm_proc.pid), 1)
    finally:
        stop(proc)
        if lm_proc is not None:
            stop(lm_proc)
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
