"""Seed 002's release loop: canary vs stable over a time window (the last 5 minutes) as well as over
the last N requests in GET /v1/variants, and memory (process RSS; GPU memory where there is a GPU)
as Prometheus series for the server and each variant's inference process."""
from __future__ import annotations

import os

import httpx

from r1.bench.load import wait_ready
from r1.serve import ServeConfig, create_app
from r1.serve.variants import RollbackRules, Router
from tests.serve.helpers import VariantLoader, png_bytes, running_server


def test_time_window_counts_only_its_stretch_and_compares_with_stable():
    router = Router({"stable": 50, "canary": 50}, "stable", RollbackRules(window=5, min_requests=100),
                    horizon_s=300)
    for t in range(0, 600, 10):  # stable: 20 ms always; canary: errors in the first 5 minutes, 60 ms since
        router.record("stable", True, 0.020, now=t)
        router.record("canary", t >= 300, 0.060, now=t)
    rows = {r["name"]: r for r in router.describe(now=600)}
    canary, stable = rows["canary"], rows["stable"]
    assert canary["window_requests"] == 5 and canary["error_rate"] == 0  # the last 5 requests
    tw = canary["time_window"]
    assert tw["seconds"] == 300 and tw["requests"] == 30 and tw["errors"] == 0 and tw["p95_ms"] == 60.0
    assert canary["requests"] == 60 and canary["errors"] == 30  # totals keep everything
    assert canary["vs_stable"]["time_window"] == {"error_rate_diff": 0.0, "p95_ratio": 3.0}
    assert stable["vs_stable"] is None and stable["time_window"]["p50_ms"] == 20.0
    short = {r["name"]: r for r in router.describe(seconds=45, now=600)}["canary"]["time_window"]
    assert short["seconds"] == 45 and short["requests"] == 4  # t = 560 ... 590
    assert {r["name"]: r for r in router.describe(seconds=10_000, now=600)}["canary"]["time_window"]["seconds"] == 300
    # answers older than the horizon are dropped as new ones come
    router.record("canary", True, 0.06, now=1000)
    assert {r["name"]: r for r in router.describe(now=1000)}["canary"]["time_window"]["requests"] == 1


def _gauges(text: str, name: str) -> dict[str, float]:
    return {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines() if line.startswith(name + "{")}


def test_variants_time_window_and_memory_series(tmp_path):
    cfg = ServeConfig(variants={"stable": str(tmp_path / "a"), "canary": str(tmp_path / "b")},
                      traffic={"stable": 50, "canary": 50}, warmup_runs=0, compare_window_s=120, inference="thread")
    with running_server(create_app(cfg, VariantLoader())) as (base, _):
        wait_ready(base, timeout=90)
        with httpx.Client(timeout=30) as client:
            for i in range(12):
                r = client.post(base + "/v1/predict", content=png_bytes(), headers={"content-type": "image/png",
                                                                                    "X-R1-User": f"u{i}"})
                assert r.status_code == 200, r.text
            body = client.get(base + "/v1/variants").json()
            rows = {r["name"]: r for r in body["variants"]}
            assert sum(r["time_window"]["requests"] for r in rows.values()) == 12
            assert all(r["time_window"]["seconds"] == 120 for r in rows.values())
            assert rows["stable"]["vs_stable"] is None and set(rows["canary"]["vs_stable"]) == {"last_requests",
                                                                                               "time_window"}
            assert client.get(base + "/v1/variants?window_s=30").json()["variants"][0]["time_window"]["seconds"] == 30
            assert client.get(base + "/v1/variants?window_s=-1").status_code == 422
            rss = _gauges(client.get(base + "/metrics").text, "r1_process_resident_memory_bytes")
    # inference in threads: the server process is the only one
    assert list(rss) == ['r1_process_resident_memory_bytes{process="server",variant=""}']
    assert list(rss.values())[0] > 10e6  # a Python process with torch holds tens of MB at least


def test_memory_series_name_each_inference_process():
    from prometheus_client import CollectorRegistry, generate_latest

    from r1.serve.resources import ResourceCollector, processes, rss_bytes

    class Worker:
        pid = os.getpid()  # stands in for a variant's inference process

    class Engine:
        worker = Worker()

    class State:
        engines = {"canary": Engine(), "stable": type("E", (), {"worker": None})()}

    pids = processes(State())
    assert set(pids.values()) >= {("inference", "canary")}  # the thread-mode variant has no process of its own
    registry = CollectorRegistry()
    registry.register(ResourceCollector(lambda: {os.getpid(): ("inference", "canary"), 2 ** 22 + 7: ("x", "gone")}))
    rss = _gauges(generate_latest(registry).decode(), "r1_process_resident_memory_bytes")
    assert list(rss) == ['r1_process_resident_memory_bytes{process="inference",variant="canary"}']  # gone: absent
    assert abs(list(rss.values())[0] - rss_bytes(os.getpid())) < 50e6


def test_gpu_memory_series_from_nvml(monkeypatch):
    """No GPU here: a stand-in `pynvml` (NVML's Python binding) reports one device and our process."""
    import sys
    import types

    from prometheus_client import CollectorRegistry, generate_latest

    from r1.serve.resources import ResourceCollector

    fake = types.SimpleNamespace(
        nvmlInit=lambda: None, nvmlDeviceGetCount=lambda: 1, nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetMemoryInfo=lambda h: types.SimpleNamespace(used=3 << 30),
        nvmlDeviceGetComputeRunningProcesses=lambda h: [types.SimpleNamespace(pid=os.getpid(), usedGpuMemory=1 << 30),
                                                        types.SimpleNamespace(pid=1, usedGpuMemory=2 << 30)])
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    registry = CollectorRegistry()
    registry.register(ResourceCollector(lambda: {os.getpid(): ("inference", "stable")}))
    text = generate_latest(registry).decode()
    assert _gauges(text, "r1_gpu_memory_used_bytes") == {'r1_gpu_memory_used_bytes{gpu="0"}': float(3 << 30)}
    assert _gauges(text, "r1_process_gpu_memory_bytes") == {
        'r1_process_gpu_memory_bytes{gpu="0",process="inference",variant="stable"}': float(1 << 30)}
