"""Issue 17 item 5: non-finite outputs. A model with NaN weights, or a preprocessing std of 0, stays
not ready (`/readyz` 503 naming the reason) instead of answering every predict with 500; an output
that turns non-finite on one input is a clear 500 `non_finite_output` for that request alone; and
`r1 predict` exits 3 with one line instead of printing `NaN` (invalid JSON)."""
from __future__ import annotations

import concurrent.futures as cf
import json
import shutil
import time

import httpx
import pytest
import torch

from r1.artifacts import load_model, save_artifact
from r1.bench.load import wait_ready
from r1.serve import ServeConfig, create_app
from tests.conftest import run_cli
from tests.serve.helpers import FakeLoader, png_bytes, running_server

CLIENT = httpx.Client(timeout=30.0)


@pytest.fixture(scope="module")
def nan_weights(trained_digits, tmp_path_factory):
    model = load_model(trained_digits)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    out = tmp_path_factory.mktemp("nan") / "nan-digits"
    save_artifact(model, out, model.r1_meta, model.r1_data)
    return out


@pytest.fixture(scope="module")
def zero_std(trained_digits, tmp_path_factory):
    out = tmp_path_factory.mktemp("std") / "std0-digits"
    out.mkdir()
    for name in ("model.safetensors", "model.json"):
        shutil.copy(trained_digits / name, out / name)
    info = json.loads((out / "model.json").read_text())
    info["meta"]["preprocess"]["std"] = [0.0, 0.0, 0.0]
    (out / "model.json").write_text(json.dumps(info))
    return out


def _load_outcome(url: str) -> httpx.Response:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        r = CLIENT.get(url + "/readyz")
        if r.json()["detail"] != "loading":
            return r
        time.sleep(0.05)
    raise AssertionError("still loading")


@pytest.mark.parametrize("which,inference,reason", [("nan_weights", "process", "weights are broken"),
                                                    ("zero_std", "thread", "std 0")])
def test_non_finite_model_is_not_ready(request, which, inference, reason):
    cfg = ServeConfig(model=str(request.getfixturevalue(which)), warmup_runs=1, inference=inference)
    with running_server(create_app(cfg)) as (url, _):
        r = _load_outcome(url)
        assert r.status_code == 503 and "NonFiniteOutput" in r.json()["detail"] and reason in r.json()["detail"]
        p = CLIENT.post(url + "/v1/predict", content=png_bytes(), headers={"content-type": "image/png"})
        assert p.status_code == 503 and p.json()["error"] == "not_ready" and reason in p.json()["detail"]
        assert CLIENT.get(url + "/healthz").status_code == 200


def test_non_finite_output_on_one_input_is_a_clear_error():
    cfg = ServeConfig(model="fake", runtime="fake", warmup_runs=0, max_batch=2, max_wait_ms=5000)
    with running_server(create_app(cfg, loader=FakeLoader(nan_width=13))) as (url, _):
        wait_ready(url, timeout=60)
        images = [png_bytes(size=(13, 13)), png_bytes(size=(8, 8))]  # one batch of two; the first gives NaN
        with cf.ThreadPoolExecutor(2) as pool:
            rs = list(pool.map(lambda im: CLIENT.post(url + "/v1/predict", content=im,
                                                      headers={"content-type": "image/png"}), images))
        assert [r.status_code for r in rs] == [500, 200], [r.text for r in rs]
        assert rs[0].json()["error"] == "non_finite_output" and "not finite" in rs[0].json()["detail"]


def test_predict_cli_refuses_to_print_nan(nan_weights, tmp_path):
    image = tmp_path / "a.png"
    image.write_bytes(png_bytes(size=(16, 16)))
    res = run_cli("predict", str(nan_weights), str(image))
    assert res.returncode == 3 and "not finite" in res.stderr and "NaN" not in res.stdout, res
