"""Artifacts (safetensors + model.json, one loader) and the eval / predict / models commands."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import r1
from r1.artifacts import read_info
from r1.errors import ConfigError
from tests.conftest import run_cli, run_r1


def test_load_model_from_run_dir_and_safetensors(trained_digits):
    a = r1.load_model(trained_digits)
    b = r1.load_model(trained_digits / "model.safetensors")
    assert not a.training
    x = torch.randn(3, 3, 16, 16)
    torch.testing.assert_close(a(x), b(x))
    assert a(x).shape == (3, 10) and a.r1_meta["num_classes"] == 10 and a.r1_family == "cls"
    info = read_info(trained_digits)
    assert info["model"]["name"] == "r1_mobilenetv3" and info["data"]["name"] == "digits"


def test_loader_rejects_bad_paths(tmp_path):
    with pytest.raises(ConfigError, match="expected a run directory or a .safetensors file"):
        r1.load_model(tmp_path / "nothing")


def test_eval_reproduces_training_metrics(trained_digits, tmp_path):
    out = tmp_path / "m.json"
    proc = run_r1("eval", str(trained_digits), "--split", "test", "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    got = json.loads(out.read_text())
    want = json.loads((trained_digits / "metrics.json").read_text())
    assert got["test/accuracy"] == pytest.approx(want["test/accuracy"])
    assert got["test/macro_f1"] == pytest.approx(want["test/macro_f1"])
    bad = run_cli("eval", str(trained_digits), "--split", "train")
    assert bad.returncode == 2 and "--split" in bad.stderr


def test_predict_prints_labels_and_rejects_bad_images(trained_digits, tmp_path):
    img = tmp_path / "digit.png"
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(img)
    proc = run_r1("predict", str(trained_digits), str(img), "--top-k", "2")
    assert proc.returncode == 0, proc.stderr
    rec = json.loads(proc.stdout.strip().splitlines()[0])
    assert rec["file"] == str(img) and rec["label"] in [str(i) for i in range(10)] and len(rec["top"]) == 2
    junk = tmp_path / "junk.png"
    junk.write_text("nope")
    bad = run_cli("predict", str(trained_digits), str(junk))
    assert bad.returncode == 3 and "not a readable image" in bad.stderr


def test_models_command_lists_flavors_with_params():
    proc = run_cli("models", "r1_*")
    assert proc.returncode == 0
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:4] == ["model", "family", "flavor", "params"]
    assert any(line.split()[:3] == ["r1_mobilenetv3", "cls", "tiny"] for line in lines)


CONTAINER_UID = 10001  # the Dockerfile's unprivileged user


def test_run_dir_files_have_the_umask_mode(trained_digits):
    from r1.artifacts import _umask

    want = 0o666 & ~_umask()
    modes = {p.name: p.stat().st_mode & 0o777 for p in trained_digits.iterdir() if p.is_file()}
    assert modes["model.safetensors"] == want and modes["model.json"] == want, modes


def _as_container_user(fn) -> str:
    """`fn()` in a child process forked from this one and switched to uid/gid 10001 without groups ->
    its string answer, or the error it raised as "Type: message"."""
    import os

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            os.setgroups([])
            os.setgid(CONTAINER_UID)
            os.setuid(CONTAINER_UID)
            got = str(fn())
        except BaseException as err:  # noqa: BLE001 - any failure is the answer
            got = f"{type(err).__name__}: {err}"
        os.write(write, got.encode()[:4000])
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        answer = pipe.read()
    os.waitpid(pid, 0)
    return answer


@pytest.mark.skipif(not hasattr(__import__("os"), "geteuid") or __import__("os").geteuid() != 0,
                    reason="switching to the container's uid 10001 needs root (tests run as root here and in CI)")
def test_a_run_dir_is_served_by_the_containers_unprivileged_uid(trained_digits):
    """What `docker run -v RUN:/models/model:ro` does: a process of uid 10001 (no groups) loads the run
    dir written by another user and predicts. Forked from this process with every module already
    imported (the interpreter itself may sit where uid 10001 cannot read, e.g. under /root)."""
    import os
    import shutil
    import tempfile

    base = tempfile.mkdtemp()  # world-traversable, unlike pytest's 0700 tmp dirs
    try:
        os.chmod(base, 0o755)
        run = shutil.copytree(trained_digits, os.path.join(base, "run"))  # file modes kept
        image = Image.fromarray(np.full((32, 32, 3), 200, np.uint8))
        want = r1.load(run).predict([image])[0]["label"]  # imports everything the child needs
        assert _as_container_user(lambda: r1.load(run).predict([image])[0]["label"]) == want
        os.chmod(os.path.join(run, "model.safetensors"), 0o600)  # as earlier versions wrote it: a clear error
        answer = _as_container_user(lambda: r1.load(run))
        assert answer.startswith("DataError: ") and "permission denied (mode 600" in answer and "chmod a+r" in answer
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_results_are_typed_records_with_attribute_access(trained_digits):
    """One Result class per family, made from its record schema: attributes, nested records, and the
    record itself unchanged (dict(r), r.to_json(), JSON, pickling to a worker and back)."""
    import pickle

    from r1.inference.result import Result
    from r1.models.cls.schema import Classification

    image = Image.fromarray(np.full((32, 32, 3), 200, np.uint8))
    r = r1.load(trained_digits).predict([image], top_k=2)[0]
    assert type(r).__name__ == "ClassificationResult" and isinstance(r, Result) and isinstance(r, dict)
    assert type(r).schema is Classification and "r.label" in type(r).__doc__
    assert (r.label, r.class_id, r.score) == (r["label"], r["class_id"], r["score"])
    assert r.top[0].label == r["top"][0]["label"] and len(r.top) == 2
    assert dict(r) == r.to_json() and type(r.to_json()) is dict and type(r.to_json()["top"][0]) is dict
    assert json.loads(json.dumps(r)) == r.to_json() and set(r) == {"label", "class_id", "score", "top"}
    back = pickle.loads(pickle.dumps(r))
    assert type(back) is type(r) and back == r
    with pytest.raises(AttributeError, match="no field 'answer'; fields: label, class_id, score, top"):
        getattr(r, "answer")  # noqa: B009 - the attribute access is what is tested
    assert "label" in dir(r)
