"""The default inference mode: the model in a worker process. Readiness waits for the worker,
requests are batched there, shutdown drains them and stops the worker, and a dead worker turns
into 503s and a false /readyz, not 500s or hangs."""
from __future__ import annotations

import concurrent.futures as cf
import os
import signal
import time

import httpx

from r1.bench.load import wait_ready
from r1.serve import ServeConfig, create_app
from tests.serve.helpers import FakeLoader, png_bytes, running_server

PNG = png_bytes(size=(8, 8))
CLIENT = httpx.Client(timeout=30.0, limits=httpx.Limits(max_connections=32))


def _post(url):
    return CLIENT.post(url + "/v1/predict", content=PNG, headers={"content-type": "image/png"})


def _cfg(**kw):
    return ServeConfig(model="fake", runtime="fake", warmup_runs=0, **kw)


def _metric(text: str, name: str) -> float:
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " "))


def test_worker_ready_batches_and_drains(tmp_path):
    go = tmp_path / "go"
    app = create_app(_cfg(max_batch=16, max_wait_ms=20), loader=FakeLoader(delay=0.2, wait_file=str(go)))
    with running_server(app) as (url, server):
        time.sleep(0.3)
        r = CLIENT.get(url + "/readyz")
        assert r.status_code == 503 and r.json()["detail"] == "loading"
        assert _post(url).json()["error"] == "not_ready"
        go.touch()
        wait_ready(url, timeout=60)
        worker = app.state.r1.worker
        assert worker.pid != os.getpid() and worker.proc.is_alive()
        with cf.ThreadPoolExecutor(16) as pool:
            codes = [r.status_code for r in pool.map(lambda _: _post(url), range(32))]
        assert codes == [200] * 32
        metrics = CLIENT.get(url + "/metrics").text
        assert _metric(metrics, "r1_batch_size_sum") == 32 and _metric(metrics, "r1_batch_size_count") <= 16
        pool = cf.ThreadPoolExecutor(4)
        futures = [pool.submit(_post, url) for _ in range(4)]
        time.sleep(0.1)  # queued or running in the worker
        server.should_exit = True
        assert [f.result(timeout=30).status_code for f in futures] == [200] * 4
        pool.shutdown()
    assert not worker.proc.is_alive() and worker.proc.exitcode == 0  # asked to stop, not killed


def test_dead_worker_gives_503_and_not_ready():
    app = create_app(_cfg(max_batch=4, max_wait_ms=1, restart_limit=0), loader=FakeLoader())
    with running_server(app) as (url, _):
        wait_ready(url, timeout=60)
        assert _post(url).status_code == 200
        os.kill(app.state.r1.worker.pid, signal.SIGKILL)
        app.state.r1.worker.proc.join(10)
        ready = CLIENT.get(url + "/readyz")  # noticed while idle, before any request fails
        assert ready.status_code == 503 and "exit code -9" in ready.json()["detail"]
        r = _post(url)
        assert r.status_code == 503 and r.json()["error"] == "not_ready", r.text
        assert "r1_ready 0.0" in CLIENT.get(url + "/metrics").text
        health = CLIENT.get(url + "/healthz")  # restart_limit 0: it will not come back
        assert health.status_code == 503 and "not restarted" in health.json()["detail"], health.text


def test_worker_dying_mid_request_gives_503():
    app = create_app(_cfg(max_batch=4, max_wait_ms=1, restart_backoff_s=30), loader=FakeLoader(delay=1.0))
    with running_server(app) as (url, _):
        wait_ready(url, timeout=60)
        with cf.ThreadPoolExecutor(1) as pool:
            pending = pool.submit(_post, url)
            time.sleep(0.4)  # the batch is in the worker
            os.kill(app.state.r1.worker.pid, signal.SIGKILL)
            r = pending.result(timeout=30)
        assert r.status_code == 503 and r.json()["error"] == "worker_died", r.text
        assert CLIENT.get(url + "/readyz").status_code == 503


def test_failed_load_in_worker_is_reported():
    app = create_app(_cfg(), loader=FakeLoader(fail="weights corrupt"))
    with running_server(app) as (url, _):
        for _ in range(300):
            r = CLIENT.get(url + "/readyz")
            if r.json()["detail"] != "loading":
                break
            time.sleep(0.05)
        assert r.status_code == 503 and "weights corrupt" in r.json()["detail"]
        assert CLIENT.get(url + "/healthz").status_code == 200
