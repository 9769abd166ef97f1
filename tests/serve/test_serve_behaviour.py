"""Server behaviour under control: readiness before warm-up, overload -> 503 at once, timeout ->
504, graceful shutdown drains in-flight requests, concurrent requests are batched."""
from __future__ import annotations

import concurrent.futures as cf
import threading
import time

import httpx

from r1.serve import ServeConfig, create_app
from tests.serve.helpers import FakePredictor, png_bytes, running_server

PNG = png_bytes(size=(8, 8))
# One pooled client: a fresh httpx client per request costs tens of ms of CPU (SSL context).
CLIENT = httpx.Client(timeout=30.0, limits=httpx.Limits(max_connections=32))


def _post(url):
    t0 = time.perf_counter()
    r = CLIENT.post(url + "/v1/predict", content=PNG, headers={"content-type": "image/png"})
    return r, time.perf_counter() - t0


def _cfg(**kw):
    kw.setdefault("inference", "thread")  # the fake's batch log stays readable in this process
    return ServeConfig(model="fake", runtime="fake", warmup_runs=0, **kw)


def test_not_ready_until_loaded_and_warm():
    release, fake = threading.Event(), FakePredictor()

    def slow_loader(cfg):
        assert release.wait(20)
        return fake

    with running_server(create_app(_cfg(), loader=slow_loader)) as (url, _):
        assert CLIENT.get(url + "/healthz").status_code == 200  # alive while loading
        r = CLIENT.get(url + "/readyz")
        assert r.status_code == 503 and r.json()["ready"] is False
        r, _ = _post(url)
        assert r.status_code == 503 and r.json()["error"] == "not_ready" and r.headers["retry-after"] == "1"
        assert "r1_ready 0.0" in CLIENT.get(url + "/metrics").text
        release.set()
        for _ in range(100):
            if CLIENT.get(url + "/readyz").status_code == 200:
                break
            time.sleep(0.05)
        assert CLIENT.get(url + "/readyz").json()["ready"] is True
        assert _post(url)[0].status_code == 200


def test_failed_load_is_reported_not_ready():
    def broken(cfg):
        raise RuntimeError("weights corrupt")

    with running_server(create_app(_cfg(), loader=broken)) as (url, _):
        time.sleep(0.2)
        r = CLIENT.get(url + "/readyz")
        assert r.status_code == 503 and "weights corrupt" in r.json()["detail"]
        assert CLIENT.get(url + "/healthz").status_code == 200


def test_overload_gets_503_promptly_and_queue_stays_bounded():
    fake = FakePredictor(delay=0.25)
    app = create_app(_cfg(max_batch=1, max_wait_ms=0, max_queue=2), loader=lambda cfg: fake)
    with running_server(app) as (url, _):
        time.sleep(0.2)
        with cf.ThreadPoolExecutor(16) as pool:
            results = list(pool.map(lambda _: _post(url), range(16)))
        metrics = CLIENT.get(url + "/metrics").text
    codes = [r.status_code for r, _ in results]
    refused = [(r, dt) for r, dt in results if r.status_code == 503]
    assert set(codes) <= {200, 503} and codes.count(200) >= 3 and len(refused) >= 8, codes
    assert all(r.headers["retry-after"] == "1" and r.json()["error"] == "overloaded" for r, _ in refused)
    # refused without waiting for the 0.25 s batches ahead of them
    assert sorted(dt for _, dt in refused)[len(refused) // 2] < 0.15
    assert 'r1_rejected_total{reason="overloaded"}' in metrics
    assert max(fake.batches) == 1 and len(fake.batches) == codes.count(200)


def test_timeout_gets_504():
    fake = FakePredictor(delay=0.5)
    app = create_app(_cfg(max_batch=1, max_wait_ms=0, timeout_ms=100), loader=lambda cfg: fake)
    with running_server(app) as (url, _):
        time.sleep(0.2)
        with cf.ThreadPoolExecutor(2) as pool:
            results = list(pool.map(lambda _: _post(url), range(2)))
    codes = sorted(r.status_code for r, _ in results)
    assert codes == [504, 504]  # the first is still running at 100 ms, the second still queued
    assert all(r.json()["error"] == "timeout" and dt < 0.45 for r, dt in results)


def test_concurrent_requests_are_batched():
    fake = FakePredictor(delay=0.05)
    app = create_app(_cfg(max_batch=16, max_wait_ms=20), loader=lambda cfg: fake)
    with running_server(app) as (url, _):
        time.sleep(0.2)
        with cf.ThreadPoolExecutor(16) as pool:
            results = list(pool.map(lambda _: _post(url), range(32)))
        metrics = CLIENT.get(url + "/metrics").text
    assert [r.status_code for r, _ in results] == [200] * 32
    assert sum(fake.batches) == 32 and max(fake.batches) >= 4
    assert "r1_batch_size_count" in metrics


def test_shutdown_drains_in_flight_requests():
    fake = FakePredictor(delay=0.3)
    app = create_app(_cfg(max_batch=2, max_wait_ms=0), loader=lambda cfg: fake)
    with running_server(app) as (url, server):
        time.sleep(0.2)
        pool = cf.ThreadPoolExecutor(4)
        futures = [pool.submit(_post, url) for _ in range(4)]
        time.sleep(0.1)  # all four are queued or running
        server.should_exit = True
        results = [f.result(timeout=20) for f in futures]
        pool.shutdown()
    assert [r.status_code for r, _ in results] == [200] * 4
    assert sum(fake.batches) == 4


def test_load_tool_both_clients_bounded():
    from r1.bench.load import run_load

    app = create_app(_cfg(max_batch=8, max_wait_ms=2), loader=lambda cfg: FakePredictor())
    with running_server(app) as (url, _):
        time.sleep(0.2)
        for client in ("raw", "httpx"):
            t0 = time.perf_counter()
            res = run_load(url, concurrency=4, duration=5.0, max_requests=40, image=PNG, client=client)
            assert time.perf_counter() - t0 < 5.5
            assert res["client"] == client and res["requests"] == res["ok"] == 40 and res["status"] == {"200": 40}
            assert 0 < res["p50"] <= res["p95"] <= res["p99"] and res["throughput"] > 0
        res = run_load(url, concurrency=2, duration=0.3, max_requests=10**6, image=PNG)
        assert res["seconds"] < 1.5  # bounded by time
