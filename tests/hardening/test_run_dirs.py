"""Issue 17 items 8-9: a run dir is locked, owned by R1 and in a sane place; exports never overwrite sources."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from r1.errors import ConfigError
from r1.train import rundir
from tests.conftest import ROOT, run_cli, tiny_cls_overrides

DIGITS = str(ROOT / "configs/cls/digits.yaml")


def _holder_pid(run_dir: Path, proc: subprocess.Popen, timeout: float = 120) -> int:
    """Wait until `proc` holds the run dir's lock; its pid as written in .r1-run."""
    marker = run_dir / rundir.MARKER
    t0 = time.time()
    while time.time() - t0 < timeout:
        assert proc.poll() is None, proc.stderr.read()
        if marker.is_file() and f'"pid": {proc.pid}' in marker.read_text():
            return proc.pid
        time.sleep(0.2)
    raise AssertionError("the first training never took the lock")


def test_second_training_on_a_held_run_dir_fails_fast_naming_the_holder(tmp_path):
    run_dir = tmp_path / "shared"
    first = subprocess.Popen([sys.executable, "-m", "r1.cli", "train", DIGITS,
                              *tiny_cls_overrides(run_dir, **{"train.max_steps": 100000}), "--no-progress"],
                             cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        pid = _holder_pid(run_dir, first)
        t0 = time.perf_counter()
        second = run_cli("train", DIGITS, *tiny_cls_overrides(run_dir), "--no-progress")
        assert time.perf_counter() - t0 < 10
        assert second.returncode == 2
        line = second.stderr.strip().splitlines()[-1]
        assert line.startswith(f"error: run dir {run_dir} is in use by process {pid} on ")
        assert "Traceback" not in second.stderr
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # kill -9 leaves the marker but no lock: the dir is free again (no checkpoint yet -> a fresh run)
    held = rundir.claim(run_dir, resume=(run_dir / "checkpoints" / "last.pt").is_file())
    held.release()


def test_lock_is_exclusive_and_released(tmp_path):
    run_dir = tmp_path / "r"
    held = rundir.lock(run_dir)
    fd = os.open(run_dir / rundir.MARKER, os.O_RDWR)
    try:
        import fcntl
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.release()
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free once released
    finally:
        os.close(fd)


@pytest.mark.parametrize("where, message", [
    ("/", "is the file system root"),
    ("~", "is the home folder"),
    ("..", "is not empty"),
])
def test_run_dir_in_a_dangerous_place_is_refused(where, message):
    target = str(Path(where).expanduser()) if where == "~" else where
    proc = run_cli("train", DIGITS, *tiny_cls_overrides(Path(target)), "--no-progress")
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr


def test_foreign_directory_and_a_saved_model_are_not_overwritten(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("do not lose me")
    proc = run_cli("train", DIGITS, *tiny_cls_overrides(foreign), "--no-progress")
    assert proc.returncode == 2
    assert f"run.dir: {foreign} is not empty (1 entry: thesis.tex) and R1 did not create it" in proc.stderr
    assert sorted(p.name for p in foreign.iterdir()) == ["thesis.tex"]
    pruned = tmp_path / "pruned"  # what a prune stage leaves: model files, no checkpoint
    pruned.mkdir()
    for name in ("config.yaml", "log.txt", "model.safetensors"):
        (pruned / name).write_text("x")
    with pytest.raises(ConfigError, match="already holds a trained model"):
        rundir.claim(pruned, resume=False)
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        rundir.claim(foreign / "thesis.tex", resume=False)
    with pytest.raises(ConfigError, match="cannot write to .*thesis.tex/run"):
        rundir.claim(foreign / "thesis.tex" / "run", resume=False)


def test_r1_dirs_stay_usable(tmp_path):
    stage = tmp_path / "stage"  # a pipeline stage directory before its training starts
    stage.mkdir()
    (stage / "stage.pending.json").write_text("{}")
    rundir.claim(stage, resume=False).release()
    old = tmp_path / "old"  # a run of an R1 that wrote no marker, interrupted before a checkpoint
    old.mkdir()
    (old / "config.yaml").write_text("x")
    (old / "log.txt").write_text("x")
    rundir.claim(old, resume=False).release()
    assert (old / rundir.MARKER).is_file()


def test_export_refuses_to_overwrite_its_source(trained_digits, tmp_path):
    before = (trained_digits / "model.safetensors").read_bytes()
    for out, message in ((trained_digits / "model.safetensors", "must end with .onnx for --format onnx"),
                         (trained_digits / "checkpoints" / "x.onnx", "would overwrite the source model's checkpoints")):
        proc = run_cli("export", str(trained_digits), "--format", "onnx", "--out", str(out))
        assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
    link = tmp_path / "weights.onnx"
    link.symlink_to(trained_digits / "model.safetensors")
    proc = run_cli("export", str(trained_digits / "model.safetensors"), "--format", "onnx", "--out", str(link))
    assert proc.returncode == 2 and "would overwrite the source model's model.safetensors" in proc.stderr
    assert (trained_digits / "model.safetensors").read_bytes() == before
