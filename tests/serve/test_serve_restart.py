"""Issue 17 item 3: worker health. A killed inference process is restarted (with backoff, counted
in r1_worker_restarts_total) and the server answers again; a stopped (SIGSTOP) one is found by its
missing heartbeat, killed and restarted; when restarts fail, /healthz answers 503; and a
generation whose request timed out (504) is stopped in the worker instead of running on."""
from __future__ import annotations

import os
import signal
import time

import httpx

from r1.bench.load import wait_ready
from r1.serve import ServeConfig, create_app
from tests.serve.helpers import FakeLoader, FakeTextLoader, png_bytes, running_server

PNG = png_bytes(size=(8, 8))
CLIENT = httpx.Client(timeout=30.0)


def _post(url):
    return CLIENT.post(url + "/v1/predict", content=PNG, headers={"content-type": "image/png"})


def _cfg(**kw):
    return ServeConfig(model="fake", runtime="fake", warmup_runs=0, max_wait_ms=1, heartbeat_s=0.1,
                       stuck_after_s=1.0, restart_backoff_s=0.1, **kw)


def _restarts(url) -> float:
    text = CLIENT.get(url + "/metrics").text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith("r1_worker_restarts_total "))


def _wait_for(predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached")


def test_killed_worker_is_restarted():
    app = create_app(_cfg(), loader=FakeLoader())
    with running_server(app) as (url, _):
        wait_ready(url, timeout=60)
        old = app.state.r1.worker
        os.kill(old.pid, signal.SIGKILL)
        old.proc.join(10)
        r = CLIENT.get(url + "/readyz")
        detail = r.json()["detail"]  # seen dying ("exiting (killed)") or dead ("exit code -9"), by timing
        assert r.status_code == 503 and ("exit code -9" in detail or "exiting (killed)" in detail), detail
        assert "restarting" in detail
        assert CLIENT.get(url + "/healthz").status_code == 200
        _wait_for(lambda: CLIENT.get(url + "/readyz").status_code == 200)
        assert app.state.r1.worker.pid != old.pid and _restarts(url) == 1
        assert _post(url).status_code == 200


def test_stopped_worker_is_found_by_its_heartbeat_and_replaced():
    app = create_app(_cfg(), loader=FakeLoader())
    with running_server(app) as (url, _):
        wait_ready(url, timeout=60)
        old = app.state.r1.worker
        os.kill(old.pid, signal.SIGSTOP)
        try:
            _wait_for(lambda: CLIENT.get(url + "/readyz").status_code == 503, timeout=20)
            assert "stuck (no heartbeat" in CLIENT.get(url + "/readyz").json()["detail"] or not old.proc.is_alive()
            _wait_for(lambda: CLIENT.get(url + "/readyz").status_code == 200)
        finally:
            if old.proc.is_alive():
                os.kill(old.pid, signal.SIGKILL)
        assert not old.proc.is_alive() and app.state.r1.worker.pid != old.pid and _restarts(url) == 1
        assert _post(url).status_code == 200


def test_healthz_fails_when_the_worker_cannot_be_restarted(tmp_path):
    broken = tmp_path / "weights-gone"
    app = create_app(_cfg(restart_limit=2), loader=FakeLoader(fail_file=str(broken)))
    with running_server(app) as (url, _):
        wait_ready(url, timeout=60)
        broken.touch()  # from now on the model cannot load
        os.kill(app.state.r1.worker.pid, signal.SIGKILL)
        _wait_for(lambda: CLIENT.get(url + "/healthz").status_code == 503, timeout=90)
        body = CLIENT.get(url + "/healthz").json()
        assert body["status"] == "failing" and "not restarted (2 attempts" in body["detail"]
        assert "weights vanished" in body["detail"] and _restarts(url) == 2
        assert CLIENT.get(url + "/readyz").status_code == 503 and _post(url).status_code == 503


def test_timed_out_generation_is_cancelled_in_the_worker():
    cfg = _cfg(max_batch=1, timeout_ms=500)
    with running_server(create_app(cfg, loader=FakeTextLoader(slow_s=30.0))) as (url, _):
        wait_ready(url, timeout=60)
        t0 = time.monotonic()
        r = CLIENT.post(url + "/v1/predict", json={"text": "slow"})  # 30 s unless stopped
        assert r.status_code == 504 and r.json()["error"] == "timeout"
        # the worker is free again at once: the next request is answered, not stuck behind 30 s
        _wait_for(lambda: CLIENT.post(url + "/v1/predict", json={"text": "hi"}).status_code == 200, timeout=10)
        assert time.monotonic() - t0 < 10
        assert "r1_cancelled_total 1.0" in CLIENT.get(url + "/metrics").text
