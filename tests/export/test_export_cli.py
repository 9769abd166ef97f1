"""`r1 export` / Predictor on a trained run: torch and onnxruntime give the same records."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import r1
from r1.errors import ConfigError, Unavailable
from r1.inference.predictor import Predictor
from tests.conftest import run_cli, run_r1


@pytest.fixture(scope="module")
def exported(trained_digits, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx") / "digits.onnx"
    res = run_r1("export", str(trained_digits), "--format", "onnx", "--out", str(out))
    assert res.returncode == 0, res.stderr
    return out, json.loads(res.stdout)


def _images(n):
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (20 + i, 24, 3), dtype=np.uint8)) for i in range(n)]


def test_cli_export_report(exported):
    out, report = exported
    assert out.is_file() and report["path"] == str(out)
    assert report["verify_batch"] != report["trace_batch"] and report["max_abs_diff"] <= 1e-4


def test_predictor_same_records_across_runtimes(trained_digits, exported):
    torch_p = Predictor.load(trained_digits, runtime="torch", threads=1)
    onnx_p = Predictor.load(exported[0], threads=1)
    assert onnx_p.runtime == "onnx" and onnx_p.family == "cls" and onnx_p.meta == torch_p.meta
    images = _images(7)
    a, b = torch_p.predict(images, top_k=3), onnx_p.predict(images, top_k=3)
    assert [r["class_id"] for r in a] == [r["class_id"] for r in b]
    assert set(a[0]) == {"label", "class_id", "score", "top"} and len(a[0]["top"]) == 3
    np.testing.assert_allclose([r["score"] for r in a], [r["score"] for r in b], atol=1e-5)
    batch = torch_p.preprocess(images)
    assert batch.shape == (7, *torch_p.input_shape) and batch.dtype == np.float32
    np.testing.assert_allclose(torch_p.run(batch), onnx_p.run(batch), atol=1e-4)
    with torch.inference_mode():  # the torch runtime runs channels-last: same numbers as the plain model
        plain = r1.load_model(trained_digits)(torch.from_numpy(batch)).numpy()
    np.testing.assert_allclose(torch_p.run(batch), plain, atol=1e-5)


def test_predictor_errors(trained_digits, exported, tmp_path):
    with pytest.raises(ConfigError, match="runtime"):
        Predictor.load(trained_digits, runtime="tflite")
    with pytest.raises(ConfigError, match="torch runtime needs"):
        Predictor.load(exported[0], runtime="torch")
    bogus = tmp_path / "x.onnx"
    bogus.write_bytes(b"not onnx")
    with pytest.raises(ConfigError, match="not a readable ONNX"):
        Predictor.load(bogus)
    with pytest.raises(Unavailable):
        Predictor.load(exported[0], runtime="tensorrt")


def test_cli_export_errors(trained_digits, tmp_path):
    res = run_cli("export", str(trained_digits), "--format", "tflite")
    assert res.returncode == 2 and "--format" in res.stderr
    res = run_cli("export", str(tmp_path / "missing"), "--format", "onnx")
    assert res.returncode == 2 and "model not found" in res.stderr


def test_server_over_onnx_model(exported):
    import httpx

    from r1.bench.load import wait_ready
    from r1.input_kinds.image import sample_png
    from r1.serve import ServeConfig, create_app
    from tests.serve.helpers import running_server

    with running_server(create_app(ServeConfig(model=str(exported[0]), runtime="onnx", warmup_runs=1))) as (url, _):
        wait_ready(url, timeout=60)
        r = httpx.post(url + "/v1/predict", content=sample_png(), headers={"content-type": "image/png"})
    assert r.status_code == 200 and r.json()["runtime"] == "onnx" and len(r.json()["result"]["top"]) == 3


def test_bench_and_export_share_one_onnx_export_of_the_same_weights(trained_digits, tmp_path, caplog, monkeypatch):
    """`r1 export RUN` then `r1 bench RUN` (or runtime="onnx"): one export, two names of one file; the other
    way round, `r1 export` links the run's cached export; other settings or new weights export afresh."""
    import logging
    import os
    import shutil

    import r1.onnx.export as onnx_export
    from r1.export.cli import run_export
    from r1.inference.runtimes import onnx_file

    caplog.set_level(logging.INFO, logger="r1")
    run = shutil.copytree(trained_digits, tmp_path / "a", ignore=shutil.ignore_patterns("onnx", "model.onnx"))
    report = run_export(run, "onnx")
    assert report["path"] == str(run / "model.onnx") and "max_abs_diff" in report
    cached = onnx_file(run)
    assert cached.parent == run / "onnx" and os.path.samefile(cached, run / "model.onnx")
    assert "written by `r1 export` from these weights" in caplog.text and "onnx: exporting" not in caplog.text

    (run / "model.onnx").unlink()  # the other way round: the cache is there (as `r1 bench` leaves it)
    report = run_export(run, "onnx")
    assert report["reused"] == str(cached) and os.path.samefile(cached, run / "model.onnx")

    def exported(*args, **kwargs):
        raise RuntimeError("exported")

    monkeypatch.setattr(onnx_export, "export_onnx", exported)
    with pytest.raises(RuntimeError, match="exported"):  # other settings: a new export
        run_export(run, "onnx", opset=18)
    from safetensors.torch import load_file, save_file
    state = load_file(str(run / "model.safetensors"))
    key = next(k for k, v in state.items() if v.is_floating_point())
    state[key] = state[key] + 0.01
    save_file({k: v.contiguous() for k, v in state.items()}, str(run / "model.safetensors"))
    with pytest.raises(RuntimeError, match="exported"):  # model.onnx is of the old weights: not used
        onnx_file(run)
