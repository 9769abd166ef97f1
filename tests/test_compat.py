"""Run dirs written before model.json format r1-model/2 (R1 0.1.x: no `r1_version`, no
`weights_sha256`) still load, evaluate, predict and serve; run dirs written before spine v3 moved
family code (tests/fixtures/compat/) also resume."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from r1.errors import ConfigError
from tests.conftest import run_cli


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
    from r1.serve import ServeConfig, create_app
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


# ----------------------------------------------------------------------------- run dirs of the pre-move code
# tests/fixtures/compat/<family>/: one tiny run per family written by R1 at ecfdb44, before spine v3 moved
# family code into r1/models/<family>/ (README.md there: how they were made). Each is a finished run whose
# checkpoints/last.pt is the one saved two steps before the end; predictions.json holds what that code's
# r1.load(run).predict(...) answered for make_fixtures.predict_inputs.
PRE_MOVE = Path(__file__).parent / "fixtures" / "compat"
FAMILIES = ("cls", "det", "lm", "mm")
TIMING = ("train/time_s", "train/cpu_s")  # how long it took is not part of the result


@pytest.fixture(scope="module")
def token_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("r1-cache")  # lm: the tokenized corpus, shared by this module's tests


def _pre_move_run(family: str, tmp_path, monkeypatch, token_cache):
    """A copy of the fixture (the committed one is never written to)."""
    monkeypatch.setenv("R1_CACHE", str(token_cache))
    run = tmp_path / family
    shutil.copytree(PRE_MOVE / family, run)
    return run


# detections are rounded (boxes to 0.01 px, scores to 1e-4): float noise may move the last digit
ROUNDED = {"boxes": 0.0101, "scores": 1.01e-4}


def _close(got, want, path="", unit=1e-9) -> None:
    """Equal structure and strings; floats within float noise. A metric the old code wrote as 0.0 for
    lack of anything to measure (mAP_medium/large of scenes without such objects, the AP of a class absent
    from the split) is null now (issue 31): None matches that 0.0."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and sorted(got) == sorted(want), path
        for k in want:
            _close(got[k], want[k], f"{path}.{k}", ROUNDED.get(k, unit))
    elif isinstance(want, list):
        assert isinstance(got, (list, tuple)) and len(got) == len(want), path
        for i, (g, w) in enumerate(zip(got, want)):
            _close(g, w, f"{path}[{i}]", unit)
    elif isinstance(want, float) and got is None:
        assert want == 0.0 and ("/mAP_" in path or "/AP/" in path), path
    elif isinstance(want, float) and not isinstance(got, bool):
        assert got == pytest.approx(want, rel=1e-6, abs=unit), path
    else:
        assert got == want, path


@pytest.mark.parametrize("family", FAMILIES)
def test_pre_move_run_evaluates_to_its_metrics(family, tmp_path, monkeypatch, token_cache):
    run = _pre_move_run(family, tmp_path, monkeypatch, token_cache)
    old = json.loads((run / "metrics.json").read_text())
    splits = sorted({k.split("/")[0] for k in old} & {"val", "test"})
    assert splits == (["val"] if family == "lm" else ["test", "val"])
    for split in splits:
        out = tmp_path / f"{split}.json"
        res = run_cli("eval", str(run), "--split", split, "--json", str(out))
        assert res.returncode == 0, res.stderr
        _close(json.loads(out.read_text()), {k: v for k, v in old.items() if k.startswith(f"{split}/")}, split)


@pytest.mark.parametrize("family", FAMILIES)
def test_pre_move_run_predicts_what_the_old_code_predicted(family, tmp_path, monkeypatch, token_cache):
    import r1
    from tests.fixtures.compat.make_fixtures import predict_inputs

    run = _pre_move_run(family, tmp_path, monkeypatch, token_cache)
    p = r1.load(run)
    assert p.family == family and p.runtime == "torch"
    inputs, options = predict_inputs(family)
    want = json.loads((PRE_MOVE / "predictions.json").read_text())[family]
    _close([r.to_json() for r in p.predict(inputs, **options)], want, family)


@pytest.mark.parametrize("family", ["lm", "mm"])
def test_pre_move_run_serves(family, tmp_path, monkeypatch, token_cache):
    import io

    from r1.bench.load import wait_ready
    from r1.serve import ServeConfig, create_app
    from tests.fixtures.compat.make_fixtures import predict_inputs
    from tests.serve.helpers import running_server

    run = _pre_move_run(family, tmp_path, monkeypatch, token_cache)
    inputs, options = predict_inputs(family)
    want = json.loads((PRE_MOVE / "predictions.json").read_text())[family][0]
    if family == "lm":
        request = {"json": {"text": inputs[0], **options}}
    else:
        image, question = inputs[0]
        buf = io.BytesIO()
        image.save(buf, "PNG")
        request = {"files": {"file": ("scene.png", buf.getvalue(), "image/png")},
                   "data": {"text": question, **{k: str(v) for k, v in options.items()}}}
    cfg = ServeConfig(model=str(run), inference="thread", warmup_runs=1, max_text_chars=300)
    with running_server(create_app(cfg)) as (url, _):
        wait_ready(url, timeout=60)
        r = httpx.post(f"{url}/v1/predict", timeout=60, **request)
    assert r.status_code == 200, r.text
    assert r.json()["family"] == family
    got = r.json()["result"]
    assert got.pop("unknown_words") == []  # the text contract (issue 30): an old run knows its words too
    _close(got, want, family)


@pytest.mark.parametrize("family", FAMILIES)
def test_pre_move_interrupted_run_resumes_to_the_same_end(family, tmp_path, monkeypatch, token_cache):
    """`r1 train CONFIG run.dir=RUN --resume` takes the old last.pt (two steps before the end) to the
    end: the same weights and metrics as the old code's uninterrupted run."""
    import torch
    from safetensors.torch import load_file

    run = _pre_move_run(family, tmp_path, monkeypatch, token_cache)
    # what a run killed at that checkpoint holds: no final model, metrics or test outputs
    for name in ("model.safetensors", "model.json", "metrics.json", "confusion_matrix.png", "detections.json"):
        (run / name).unlink(missing_ok=True)
    logged = len((run / "log.txt").read_text())
    res = run_cli("train", str(run / "config.yaml"), f"run.dir={run}", "--resume", "--no-progress")
    assert res.returncode == 0, res.stderr
    assert "resumed from" in (run / "log.txt").read_text()[logged:]
    old, new = load_file(str(PRE_MOVE / family / "model.safetensors")), load_file(str(run / "model.safetensors"))
    assert old.keys() == new.keys()
    for k in old:  # identical on the machine that wrote the fixture; float noise allowed elsewhere
        torch.testing.assert_close(new[k], old[k], rtol=1e-5, atol=1e-6, msg=lambda m, k=k: f"{k}: {m}")
    want, got = (json.loads((d / "metrics.json").read_text()) for d in (PRE_MOVE / family, run))
    for timing in TIMING:
        want.pop(timing), got.pop(timing)
    _close(got, want, family)
