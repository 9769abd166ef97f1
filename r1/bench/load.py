"""HTTP load generator for `r1 serve`: closed-loop async clients, bounded in requests and time.

    result = run_load("http://127.0.0.1:8000", concurrency=32, duration=20, max_requests=100_000)
    # {"concurrency", "requests", "ok", "status": {code: n}, "seconds", "throughput", "p50", "p95", "p99"}

Two clients: `httpx` (httpx.AsyncClient) and `raw` (default: one keep-alive HTTP/1.1 connection
per worker on asyncio streams, a pre-built request, like wrk). On this 2-core machine httpx spent
~9 ms of CPU per request, more than the server itself, so with the load tool on the same machine
it measured the client; the raw client costs a fraction of that.
"""
from __future__ import annotations

import asyncio
import logging
import time
from urllib.parse import urlsplit

import httpx

from r1.bench.latency import percentiles

log = logging.getLogger(__name__)


class _RawConnection:
    """One keep-alive HTTP/1.1 connection sending the same pre-built request."""

    def __init__(self, host: str, port: int, request: bytes):
        self.host, self.port, self.request = host, port, request
        self.reader = self.writer = None

    async def post(self) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(self.request)
        await self.writer.drain()
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("server closed the connection")
        status = int(status_line.split()[1])
        length, close = 0, False
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        await self.reader.readexactly(length)
        if close:
            self.close()
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def _load(url: str, concurrency: int, duration: float, max_requests: int, body: bytes, content_type: str,
                timeout: float, client: str = "raw") -> dict:
    endpoint = url.rstrip("/") + "/v1/predict"
    latencies: list[float] = []
    failed: list[float] = []  # latencies of non-200 answers (e.g. how fast a 503 comes back)
    status: dict[str, int] = {}
    sent = 0
    stop_at = time.perf_counter() + duration
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    parts = urlsplit(endpoint)
    request = (f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: {content_type}\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body

    async def raw_worker(_unused) -> None:
        nonlocal sent
        conn = _RawConnection(parts.hostname, parts.port or 80, request)
        while sent < max_requests and time.perf_counter() < stop_at:
            sent += 1
            t0 = time.perf_counter()
            try:
                key = str(await asyncio.wait_for(conn.post(), timeout))
            except (OSError, ValueError, IndexError, asyncio.TimeoutError, asyncio.IncompleteReadError) as err:
                key = type(err).__name__
                conn.close()
            dt = time.perf_counter() - t0
            status[key] = status.get(key, 0) + 1
            (latencies if key == "200" else failed).append(dt)
        conn.close()

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal sent
        while sent < max_requests and time.perf_counter() < stop_at:
            sent += 1
            t0 = time.perf_counter()
            try:
                r = await client.post(endpoint, content=body, headers={"content-type": content_type})
                key = str(r.status_code)
            except httpx.HTTPError as err:
                key = type(err).__name__
            dt = time.perf_counter() - t0
            status[key] = status.get(key, 0) + 1
            (latencies if key == "200" else failed).append(dt)

    async with httpx.AsyncClient(limits=limits, timeout=timeout) as http:
        one = worker if client == "httpx" else raw_worker
        t0 = time.perf_counter()
        await asyncio.gather(*(one(http) for _ in range(concurrency)))
        seconds = time.perf_counter() - t0
    ok = status.get("200", 0)
    return {"client": client, "concurrency": concurrency, "requests": sent, "ok": ok, "status": status,
            "seconds": round(seconds, 3), "throughput": ok / seconds if seconds > 0 else 0.0,
            **percentiles(latencies), "p50_failed": percentiles(failed, (50,))["p50"]}


def sample_request(url: str, timeout: float = 10.0) -> tuple[bytes, str]:
    """(body, content type) of a typical /v1/predict request for the server at `url`: its input
    kind's sample (the kind is read from /readyz; a server that does not say takes images)."""
    from r1.input_kinds import get_input_kind

    try:
        inputs = httpx.get(url.rstrip("/") + "/readyz", timeout=timeout).json().get("inputs") or "image"
    except (httpx.HTTPError, ValueError, AttributeError):
        inputs = "image"
    return get_input_kind(inputs).sample_request()


def run_load(url: str, concurrency: int = 8, duration: float = 20.0, max_requests: int = 100_000,
             image: bytes | None = None, timeout: float = 30.0, client: str = "raw",
             request: tuple[bytes, str] | None = None) -> dict:
    """Closed loop: `concurrency` clients each send one request after another until `duration`
    seconds or `max_requests` in total. The request: `request` (body, content type), or `image` as an
    image/png body, or else a sample of the server's input kind (`sample_request`). Latencies in
    seconds, of successful (200) requests; other outcomes are counted in `status`."""
    if concurrency < 1 or duration <= 0 or max_requests < 1:
        raise ValueError("concurrency and max_requests must be >= 1, duration > 0")
    if client not in ("raw", "httpx"):
        raise ValueError(f"client must be raw or httpx, got {client!r}")
    if urlsplit(url).scheme != "http":
        raise ValueError(f"{url}: only http:// URLs are supported")
    body, content_type = request or ((image, "image/png") if image is not None else sample_request(url, timeout))
    return asyncio.run(_load(url, concurrency, duration, max_requests, body, content_type, timeout, client))


def wait_ready(url: str, timeout: float = 120.0) -> float:
    """Poll GET /readyz until 200; returns seconds waited. Raises TimeoutError."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        try:
            if httpx.get(url.rstrip("/") + "/readyz", timeout=2.0).status_code == 200:
                return time.perf_counter() - t0
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} not ready after {timeout:.0f}s")
