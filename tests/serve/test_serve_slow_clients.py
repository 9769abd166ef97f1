"""Issue 17 item 4: slow clients and disconnects. A connection that sends no (or half a) request
head gets 408 and is closed after `header_timeout_s`; a body that does not arrive within
`body_timeout_s` gets 408 `body_timeout`; a client that disconnects (mid-body, or while its request
waits for the model) is counted as its own outcome (status 499 in /metrics), not a 500, and logs
no traceback."""
from __future__ import annotations

import json
import logging
import socket
import time
from urllib.parse import urlparse

import httpx
import pytest

from r1.bench.load import wait_ready
from r1.serve import ServeConfig, create_app
from r1.serve.protocol import with_header_timeout
from tests.serve.helpers import FakeLoader, running_server

CLIENT = httpx.Client(timeout=30.0)


def _connect(url: str) -> socket.socket:
    u = urlparse(url)
    sock = socket.create_connection((u.hostname, u.port), timeout=10)
    return sock


def _read_all(sock: socket.socket) -> bytes:
    out = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return out
        out += chunk


def _status_count(metrics: str, status: str) -> float:
    key = f'r1_requests_total{{route="/v1/predict",status="{status}"}}'
    return sum(float(line.split()[-1]) for line in metrics.splitlines() if line.startswith(key))


def _cfg(**kw):
    return ServeConfig(model="fake", runtime="fake", warmup_runs=0, max_wait_ms=1, header_timeout_s=0.5, inference="thread",
                       body_timeout_s=0.5, **kw)


@pytest.mark.parametrize("parser", ["httptools", "h11"])
def test_slow_header_and_slow_body_clients_time_out(parser):
    app = create_app(_cfg(), loader=FakeLoader())
    with running_server(app, http=with_header_timeout(0.5, parser)) as (url, _):
        wait_ready(url, timeout=60)
        t0 = time.monotonic()
        idle, half = _connect(url), _connect(url)
        half.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Ty")  # and then nothing
        for sock in (idle, half):
            answer = _read_all(sock)  # returns once the server closes the connection
            assert answer.startswith(b"HTTP/1.1 408"), answer
            assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"] == "header_timeout"
            sock.close()
        assert time.monotonic() - t0 < 5.0
        slow = _connect(url)
        slow.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                     b"Content-Length: 1000\r\n\r\n" + b"\x89PNG" * 4)  # 16 of 1000 bytes
        answer = _read_all(slow)
        slow.close()
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"] == "body_timeout"
        assert time.monotonic() - t0 < 10.0
        # a normal client on a kept-alive connection is not affected
        with httpx.Client(timeout=10) as c:
            for _ in range(3):
                assert c.get(url + "/healthz").status_code == 200
                time.sleep(0.2)


def test_disconnects_are_their_own_outcome_without_traceback(caplog):
    caplog.set_level(logging.INFO)
    cfg = _cfg(max_batch=1)
    with running_server(create_app(cfg, loader=FakeLoader(delay=1.5))) as (url, _):
        wait_ready(url, timeout=60)
        mid_body = _connect(url)
        mid_body.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                         b"Content-Length: 1000\r\n\r\n" + b"\x89PNG")
        time.sleep(0.1)
        mid_body.close()
        waiting = _connect(url)  # a whole request, then gone while the model runs
        from tests.serve.helpers import png_bytes
        body = png_bytes(size=(8, 8))
        waiting.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        time.sleep(0.3)
        waiting.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            metrics = CLIENT.get(url + "/metrics").text
            if _status_count(metrics, "499") >= 2:
                break
            time.sleep(0.05)
        assert _status_count(metrics, "499") == 2, metrics
        assert _status_count(metrics, "500") == 0 and _status_count(metrics, "200") == 0
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records if r.exc_info]
