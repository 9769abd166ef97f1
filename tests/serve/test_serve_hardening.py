"""Issue 30 findings 4-9 and 11 (serving): prompt-list floods, a canary that cannot load, variants of two
families, decoded pixels in flight, canary timeouts, deep JSON and huge weights, the one text contract,
one status for too-long text, /readyz right after the worker died, stop-string and header limits."""
from __future__ import annotations

import concurrent.futures as cf
import io
import json
import logging
import os
import signal
import time

import httpx
import numpy as np
import pytest
from PIL import Image

from r1.bench.load import wait_ready
from r1.config_commands import ServeConfig
from r1.errors import ConfigError
from r1.inference.result import Result
from r1.serve import create_app
from r1.serve.batcher import PixelBudget
from tests.serve.helpers import (
    FakeLoader,
    FakePredictor,
    FakeStreamPredictor,
    FakeTextLoader,
    VariantLoader,
    png_bytes,
    running_server,
)

CLIENT = httpx.Client(timeout=60.0)


def _variants(**kw) -> ServeConfig:
    base = dict(variants={"stable": "runs/good", "canary": "runs/good-b"}, traffic={"stable": 50, "canary": 50},
                inference="thread", warmup_runs=0, max_wait_ms=0.5, rollback_window=50, rollback_min_requests=20)
    return ServeConfig(**{**base, **kw})


def _post_image(url, image=None, **headers):
    return CLIENT.post(url + "/v1/predict", content=image or png_bytes((8, 8)),
                       headers={"content-type": "image/png", **headers})


def _metric(url: str, prefix: str) -> float:
    return sum(float(line.split()[-1]) for line in CLIENT.get(url + "/metrics").text.splitlines()
               if line.startswith(prefix))


# ----------------------------------------------------------------------------- 4: prompt-list floods
def test_prompt_list_that_cannot_fit_or_fails_frees_its_places_at_once():
    cfg = ServeConfig(model="runs/poet", inference="thread", warmup_runs=0, max_batch=1, max_queue=8,
                      max_prompts=16, timeout_ms=60_000, max_new_tokens=4096)
    app = create_app(cfg, lambda cfg: FakeStreamPredictor())  # "slow" streams for 40 s, "boom" raises
    with running_server(app) as (url, _):
        wait_ready(url, timeout=30)
        r = CLIENT.post(url + "/v1/completions", json={"prompt": ["slow"] * 10})  # 10 places, 8 exist
        assert r.status_code == 503 and r.json()["error"] == "overloaded" and "10 more asked" in r.json()["detail"]
        r = CLIENT.post(url + "/v1/completions", json={"prompt": ["slow"] * 17})
        assert r.status_code == 400 and "at most 16 per request" in r.json()["detail"]
        t0 = time.perf_counter()
        r = CLIENT.post(url + "/v1/completions", json={"prompt": ["boom", "slow", "slow", "slow"], "max_tokens": 4000})
        assert r.status_code == 500 and r.json()["error"] == "generation_failed"
        r = CLIENT.post(url + "/v1/completions", json={"prompt": "hi"})  # not behind 3 x 40 s of orphans
        assert r.status_code == 200 and r.json()["choices"][0]["text"] == "ih"
        assert time.perf_counter() - t0 < 10
        assert app.state.r1.stable.batcher.depth == 0


def test_all_or_none_raises_the_failure_and_cancels_the_rest():
    import asyncio

    from r1.input_kinds.http import ApiError
    from r1.serve.completions import all_or_none

    stopped = []

    async def long():
        try:
            await asyncio.sleep(30)
        finally:
            stopped.append(True)

    async def fails():
        await asyncio.sleep(0.01)
        raise ApiError(504, "timeout", "no result")

    async def main():
        with pytest.raises(ApiError, match="no result"):  # the prompt before it was cancelled: not its error
            await all_or_none([long(), fails(), long()])
        assert stopped == [True, True]
        assert await all_or_none([asyncio.sleep(0, "a"), asyncio.sleep(0.01, "b")]) == ["a", "b"]

    asyncio.run(asyncio.wait_for(main(), 5))


# ----------------------------------------------------------------------------- 5, 6: variants that cannot serve
def _one_rollback_line(caplog, name: str) -> None:
    lines = [r for r in caplog.records if "rollback: variant " + name in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0].getMessage(), [r.getMessage() for r in lines]
    assert not any(r.exc_info for r in caplog.records) and "Traceback" not in caplog.text


@pytest.mark.parametrize("canary, why", [("runs/nan-weights", "NonFiniteOutput"),
                                         ("runs/text-model", "not of the stable variant's family")],
                         ids=["cannot-load", "other-family"])
def test_canary_that_cannot_serve_is_rolled_back_at_once_and_readyz_follows_stable(canary, why, caplog):
    caplog.set_level(logging.INFO, logger="r1")
    app = create_app(_variants(variants={"stable": "runs/good", "canary": canary}, warmup_runs=1), VariantLoader())
    with running_server(app) as (url, _):
        wait_ready(url, timeout=30)  # ready: it follows the stable variant
        ready = CLIENT.get(url + "/readyz").json()
        assert ready["ready"] and ready["variants"] == {"stable": True, "canary": False}
        rows = {v["name"]: v for v in CLIENT.get(url + "/v1/variants").json()["variants"]}
        assert rows["canary"]["weight"] == 0 and rows["canary"]["rolled_back"].startswith("cannot serve: ")
        assert why in rows["canary"]["rolled_back"]
        rs = [_post_image(url) for _ in range(40)]
        assert [r.status_code for r in rs] == [200] * 40 and {r.json()["variant"] for r in rs} == {"stable"}
        assert _metric(url, 'r1_variant_rollbacks_total{rule="load",variant="canary"}') == 1
    _one_rollback_line(caplog, "canary")


def test_variants_of_two_families_are_refused_at_start(trained_digits, trained_mm):
    from tests.conftest import run_cli

    proc = run_cli("serve", f"stable={trained_digits}", f"canary={trained_mm}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == ("error: serve.variants: variants must be models of one family (they answer the "
                                   "same requests); got stable: cls, canary: mm")


# ----------------------------------------------------------------------------- 7: decoded pixels in flight
class PixelRecorder(FakePredictor):
    """Records the pixels of every batch it decodes (thread inference: the test reads them)."""

    def __init__(self):
        super().__init__(delay=0.05)
        self.batch_pixels: list[int] = []

    def preprocess(self, images):
        self.batch_pixels.append(sum(im.width * im.height for im in images))
        return super().preprocess(images)


class RecorderLoader:
    def __init__(self):
        self.predictor = PixelRecorder()

    def __call__(self, cfg):
        return self.predictor


def _blank_png(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h)).save(buf, format="PNG")
    return buf.getvalue()


def test_pixel_budget_bounds_decoded_pixels_in_flight():
    loader = RecorderLoader()
    cfg = ServeConfig(model="runs/big", inference="thread", warmup_runs=0, max_batch=16, max_wait_ms=30,
                      max_pixels=1_000_000, max_pixels_in_flight=2_000_000, timeout_ms=60_000)
    app = create_app(cfg, loader)
    big = _blank_png(1000, 1000)  # a few KB, a million pixels decoded
    assert len(big) < 64 << 10
    with running_server(app) as (url, _):
        wait_ready(url, timeout=30)
        with cf.ThreadPoolExecutor(12) as pool:
            rs = list(pool.map(lambda _: _post_image(url, big), range(12)))
        assert [r.status_code for r in rs] == [200] * 12
        assert max(loader.predictor.batch_pixels) <= 2_000_000, loader.predictor.batch_pixels  # 2 images at a time
        assert app.state.r1.stable.budget.used == 0


def test_pixel_budget_waits_in_order_and_cancels_cleanly():
    import asyncio

    async def main():
        budget = PixelBudget(10)
        assert await budget.acquire(6) == 6
        big = asyncio.ensure_future(budget.acquire(8))  # waits for room
        small = asyncio.ensure_future(budget.acquire(1))  # fits, but waits its turn behind the big one
        await asyncio.sleep(0.01)
        assert not big.done() and not small.done()
        budget.release(6)
        await asyncio.sleep(0.01)
        assert big.result() == 8 and small.result() == 1 and budget.used == 9
        late = asyncio.ensure_future(budget.acquire(5))
        await asyncio.sleep(0.01)
        late.cancel()
        await asyncio.sleep(0.01)
        budget.release(9)
        assert budget.used == 0 and await budget.acquire(50) == 10  # larger than the limit: runs alone

    asyncio.run(main())


def test_every_route_submits_through_the_engine_budget():
    """Routes queue work with `engine.submit` (the pixel budget), never the batcher directly."""
    from pathlib import Path

    import r1.serve

    for path in Path(r1.serve.__file__).parent.glob("*.py"):
        if path.name not in ("engine.py", "batcher.py"):
            assert "batcher.submit(" not in path.read_text(), path


# ----------------------------------------------------------------------------- 8: canary timeouts
def test_canary_timeout_is_retried_on_stable_within_the_timeout():
    app = create_app(_variants(variants={"stable": "runs/good", "canary": "runs/stall"},
                               traffic={"stable": 1, "canary": 99}, timeout_ms=800), VariantLoader())
    with running_server(app) as (url, _):
        wait_ready(url, timeout=30)
        for _ in range(2):
            t0 = time.perf_counter()
            r = _post_image(url)
            assert r.status_code == 200 and r.headers["x-r1-variant"] == "stable", r.text
            assert time.perf_counter() - t0 < 0.8 + 0.5
        assert _metric(url, 'r1_variant_retries_total{variant="canary"}') >= 1


# ----------------------------------------------------------------------------- 9: deep JSON, huge weights
def test_deep_json_and_huge_weights_are_4xx():
    app = create_app(ServeConfig(variants={"stable": "runs/a", "canary": "runs/b"}, traffic={"stable": 9, "canary": 1},
                                 inference="thread", warmup_runs=0, admin_token="t"), FakeTextLoader())
    auth = {"Authorization": "Bearer t", "content-type": "application/json"}
    with running_server(app) as (url, _):
        wait_ready(url, timeout=30)
        deep = b"[" * 100_000 + b"]" * 100_000
        for route, headers in (("/v1/completions", {"content-type": "application/json"}), ("/v1/variants", auth),
                               ("/v1/predict", {"content-type": "application/json"})):
            r = CLIENT.post(url + route, content=deep, headers=headers)
            assert r.status_code == 400 and "RecursionError" in r.json()["detail"], (route, r.text)
        for weights in ('{"canary": 1' + "0" * 400 + "}", '{"stable": 1e308, "canary": 1e308}', '{"canary": 1e999}',
                        '{"canary": 1' + "0" * 5000 + "}"):
            r = CLIENT.post(url + "/v1/variants", content=b'{"weights": ' + weights.encode() + b"}", headers=auth)
            assert r.status_code in (400, 422), r.text
        shares = {v["name"]: v["share"] for v in CLIENT.get(url + "/v1/variants").json()["variants"]}
        assert shares == {"stable": 0.9, "canary": 0.1}
    for traffic in ({"stable": 1e308, "canary": 1e308}, {"stable": 10 ** 400}):
        with pytest.raises(ConfigError, match=r"serve.traffic.stable: .* is not allowed; a number >= 0 and at most"):
            ServeConfig(variants={"stable": "a", "canary": "b"}, traffic=traffic).validate()
    from tests.conftest import run_cli

    proc = run_cli("serve", "stable=runs/a", "canary=runs/b", "--traffic", "stable=1e400,canary=1")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "a number >= 0 and at most" in proc.stderr


# ----------------------------------------------------------------------------- 11: one text contract
class VocabStream(FakeStreamPredictor):
    """A streaming text model that knows the words to, be, or, not (and '?')."""

    def unknown_words(self, text):
        from r1.models.lm.tokenizer import unknown_words

        return unknown_words(text, None, ["to", "be", "or", "not", "?"])


class VocabPairs:
    """An image+text model (answers 'yes') that knows the same words."""

    family, runtime, inputs = "fake-mm", "fake", "image+text"
    unknown_words = VocabStream.unknown_words

    def predict(self, pairs, top_k=3, **options):
        return [Result({"answer": "yes", "probability": 1.0, "top_k": [{"answer": "yes", "probability": 1.0}]})
                for _ in pairs]

    def warmup(self, runs=1, batch_sizes=(1,)):
        pass


@pytest.fixture(scope="module")
def text_servers():
    make = lambda cls: create_app(ServeConfig(model="runs/m", inference="thread", warmup_runs=0,  # noqa: E731
                                              max_text_chars=200), lambda cfg: cls())
    with running_server(make(VocabStream)) as (text_url, _), running_server(make(VocabPairs)) as (pair_url, _):
        wait_ready(text_url, timeout=30)
        wait_ready(pair_url, timeout=30)
        yield text_url, pair_url


def _pair(url, text):
    import base64

    return CLIENT.post(url + "/v1/predict", json={"image": base64.b64encode(png_bytes((8, 8))).decode(), "text": text})


def test_one_text_contract_for_every_text_family(text_servers):
    text_url, pair_url = text_servers
    ask = {"predict": lambda t: CLIENT.post(text_url + "/v1/predict", json={"text": t, "max_new_tokens": 4}),
           "completions": lambda t: CLIENT.post(text_url + "/v1/completions", json={"prompt": t, "max_tokens": 4}),
           "stream": lambda t: CLIENT.post(text_url + "/v1/completions", json={"prompt": t, "max_tokens": 4,
                                                                                "stream": True}),
           "image+text": lambda t: _pair(pair_url, t)}
    for route, send in ask.items():
        r = send("xyzzy qwerty?")  # no known word ('?' is no word when there are words)
        assert r.status_code == 422 and r.json()["error"] == "unknown_words", (route, r.text)
        assert "'xyzzy', 'qwerty'" in r.json()["detail"]
        r = send("to be xyzzy")
        assert r.status_code == 200, (route, r.text)
        if route == "stream":
            events = [json.loads(x[6:]) for x in r.text.split("\n\n") if x.startswith("data: {")]
            unknown = events[-1]["choices"][0]["unknown_words"]
        else:
            body = r.json()
            unknown = body["choices"][0]["unknown_words"] if route == "completions" else body["result"]["unknown_words"]
        assert unknown == ["xyzzy"], route
        r = send("a" * 201)  # too long: one status everywhere
        assert r.status_code == 413 and r.json()["error"] == "text_too_long", (route, r.text)


def test_real_tokenizers_and_models_know_their_words(trained_mm):
    import r1
    from r1.models.lm.tokenizer import CharTokenizer, unknown_words

    char = CharTokenizer("abcdefghijklmnopqrstuvwxyz ")
    assert unknown_words("hello wörld 42", char) == (["hello", "wörld", "42"], ["wörld", "42"])
    vqa = r1.load(trained_mm)
    words, unknown = vqa.unknown_words("What is the shape of the red object?")
    assert words and not unknown
    assert vqa.unknown_words("xyzzy qwerty")[1] == ["xyzzy", "qwerty"]


def test_stop_strings_and_headers_are_limited(text_servers):
    text_url, _ = text_servers
    r = CLIENT.post(text_url + "/v1/completions", json={"prompt": "to be", "stop": "x" * 1_000_000})
    assert r.status_code in (400, 413), r.text
    r = CLIENT.post(text_url + "/v1/completions", json={"prompt": "to be", "stop": "x" * 257})
    assert r.status_code == 400 and "at most 256 characters" in r.json()["detail"]
    for method, route in (("POST", "/v1/predict"), ("GET", "/healthz")):
        r = CLIENT.request(method, text_url + route, json={"text": "to be"}, headers={"X-R1-User": "u" * 200_000})
        assert r.status_code == 431 and r.json()["error"] == "headers_too_large", r.text


# ----------------------------------------------------------------------------- 11: /readyz after a death
def _ballast_then_sleep(mb: int) -> None:
    ballast = b"\1" * (mb << 20)  # noqa: F841 (held: the process takes a while to free it when killed)
    time.sleep(60)


def test_a_dying_worker_is_a_problem_at_once():
    """The check /readyz runs (Supervisor.check -> InferenceProcess.problem) sees a killed worker while the
    kernel still frees its memory, before it is reaped (a forked stand-in: no interpreter start-up)."""
    import multiprocessing as mp

    from r1.serve.worker import InferenceProcess, exiting

    worker = InferenceProcess.__new__(InferenceProcess)
    worker.proc = mp.get_context("fork").Process(target=_ballast_then_sleep, args=(300,), daemon=True)
    worker.heartbeat, worker.started = type("Beat", (), {"value": time.monotonic() + 3600})(), time.monotonic()
    worker.proc.start()
    try:
        time.sleep(0.5)  # its ballast is touched
        assert worker.problem(10.0) is None
        os.kill(worker.proc.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while worker.proc.is_alive() and not exiting(worker.proc.pid) and time.monotonic() < deadline:
            time.sleep(0.0005)
        assert worker.problem(10.0) is not None  # exiting or exited: never "fine"
    finally:
        worker.proc.join(10)


@pytest.mark.slow
def test_readyz_is_not_ready_as_soon_as_the_worker_dies():
    from r1.serve.worker import exiting

    app = create_app(ServeConfig(model="fake", runtime="fake", warmup_runs=0, restart_backoff_s=5.0),
                     loader=FakeLoader(ballast_mb=300))  # a large worker takes a while to exit
    with running_server(app) as (url, _):
        wait_ready(url, timeout=120)
        worker = app.state.r1.worker
        os.kill(worker.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while worker.proc.is_alive() and not exiting(worker.pid) and time.monotonic() < deadline:
            time.sleep(0.001)
        r = CLIENT.get(url + "/readyz")  # the worker is dying or dead: not ready, now
        assert r.status_code == 503 and not r.json()["ready"], r.text
        assert np.isfinite(_metric(url, "r1_ready ")) and _metric(url, "r1_ready ") == 0
