"""Run dirs written before model.json format r1-model/2 (R1 0.1.x: no `r1_version`, no
`weights_sha256`) still load, evaluate, predict and serve."""
from __future__ import annotations

import json
import shutil

import httpx
import numpy as np
import pytest
from PIL import Image

from r1.errors import ConfigError


@pytest.fixture()
def old_run(trained_digits, tmp_path):
    run = tmp_path / "old"
    shutil.copytree(trained_digits, run, ignore=shutil.ignore_patterns("onnx"))
    info = json.loads((run / "model.json").read_text())
    old = {"format": "r1-model/1", **{k: info[k] for k in ("family", "model", "meta", "data")}}
    (run / "model.json").write_text(json.dumps(old, indent=2))
    return run


def test_model_json_records_version_and_weights_hash(trained_digits):
    import r1
    from r1.artifacts import sha256_file

    info = json.loads((trained_digits / "model.json").read_text())
    assert info["format"] == "r1-model/2" and info["r1_version"] == r1.__version__
    assert info["weights_sha256"] == sha256_file(trained_digits / "model.safetensors")


def test_old_run_dir_loads_evaluates_predicts_and_serves(old_run, trained_digits):
    import r1
    from r1.evaluate.artifact import evaluate_artifact
    from r1.serve.app import ServeConfig, create_app
    from tests.serve.helpers import png_bytes, running_server

    assert r1.load_model(old_run).r1_family == "cls"
    assert evaluate_artifact(old_run, "test") == evaluate_artifact(trained_digits, "test")
    image = Image.fromarray(np.full((32, 32, 3), 200, np.uint8))
    assert r1.load(old_run).predict([image]) == r1.load(trained_digits).predict([image])
    with running_server(create_app(ServeConfig(model=str(old_run), inference="thread", warmup_runs=1))) as (url, _):
        for _ in range(200):
            if httpx.get(f"{url}/readyz").status_code == 200:
                break
            __import__("time").sleep(0.05)
        r = httpx.post(f"{url}/v1/predict", files={"file": ("a.png", png_bytes(), "image/png")})
    assert r.status_code == 200 and r.json()["family"] == "cls"


def test_unknown_format_names_the_readable_ones(old_run):
    from r1.artifacts import read_info

    info = json.loads((old_run / "model.json").read_text())
    (old_run / "model.json").write_text(json.dumps({**info, "format": "r1-model/9"}))
    with pytest.raises(ConfigError, match="r1-model/9.*reads r1-model/1, r1-model/2"):
        read_info(old_run)


def test_onnx_runtime_reuses_the_export_cached_in_the_run_dir(trained_digits, tmp_path):
    import r1

    run = tmp_path / "run"
    shutil.copytree(trained_digits, run, ignore=shutil.ignore_patterns("onnx"))
    first = r1.load(run, runtime="onnx")
    cached = sorted((run / "onnx").glob("model-*.onnx"))
    assert len(cached) == 1 and first.path == cached[0]
    stamp = cached[0].stat().st_mtime_ns
    assert r1.load(run, runtime="onnx").path == cached[0] and cached[0].stat().st_mtime_ns == stamp
    # new weights -> a new export (the key is the weights' hash)
    from safetensors.torch import load_file, save_file

    state = load_file(str(run / "model.safetensors"))
    key = next(k for k, v in state.items() if v.is_floating_point())
    state[key] = state[key] + 0.01
    save_file({k: v.contiguous() for k, v in state.items()}, str(run / "model.safetensors"))
    assert r1.load(run, runtime="onnx").path != cached[0]
    assert len(list((run / "onnx").glob("model-*.onnx"))) == 2


def test_predict_accepts_onnx(trained_digits, tmp_path):
    import r1
    from r1.predict import predict_files

    onnx = r1.load(trained_digits, runtime="onnx").path
    img = tmp_path / "x.png"
    Image.fromarray(np.full((20, 20, 3), 120, np.uint8)).save(img)
    by_onnx = list(predict_files(onnx, [img]))
    by_torch = list(predict_files(trained_digits, [img]))
    assert by_onnx[0]["label"] == by_torch[0]["label"]
    assert by_onnx[0]["score"] == pytest.approx(by_torch[0]["score"], abs=1e-4)
