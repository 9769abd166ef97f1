"""Issue 17 item 2: a request that fails inside its batch fails alone. Four prompts form one batch in
the worker process; the one that raises gets 500 `generation_failed`, the one whose record holds a
NaN 500 `non_finite_output`, and their batch-mates their normal 200 answers."""
from __future__ import annotations

import concurrent.futures as cf

import httpx

from r1.bench.load import wait_ready
from r1.serve import ServeConfig, create_app
from tests.serve.helpers import FakeTextLoader, running_server

CLIENT = httpx.Client(timeout=30.0, limits=httpx.Limits(max_connections=8))


def _metric(text: str, name: str) -> float:
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " "))


def test_failing_generation_fails_alone_in_its_batch():
    cfg = ServeConfig(model="fake", runtime="fake", warmup_runs=0, max_batch=4, max_wait_ms=5000)
    with running_server(create_app(cfg, loader=FakeTextLoader())) as (url, _):
        wait_ready(url, timeout=60)
        prompts = ["boom", "nan", "hello", "abc"]
        with cf.ThreadPoolExecutor(4) as pool:
            rs = list(pool.map(lambda t: CLIENT.post(url + "/v1/predict", json={"text": t}), prompts))
        assert [r.status_code for r in rs] == [500, 500, 200, 200], [r.text for r in rs]
        assert rs[0].json()["error"] == "generation_failed" and "boom" in rs[0].json()["detail"]
        assert rs[1].json()["error"] == "non_finite_output" and "NaN" in rs[1].json()["detail"]
        assert [r.json()["result"]["text"] for r in rs[2:]] == ["olleh", "cba"]
        metrics = CLIENT.get(url + "/metrics").text
        assert _metric(metrics, "r1_batch_size_count") == 1  # they did share one batch
