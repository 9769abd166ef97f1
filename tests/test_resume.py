"""Exact resume: a run killed with SIGKILL mid-epoch and resumed ends identical to an uninterrupted one."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from safetensors.torch import load_file

from tests.conftest import ROOT, run_cli, run_r1, tiny_cls_overrides

# 39 steps per epoch at batch 32: checkpoints every 4 steps land mid-epoch; 45 steps cross an epoch.
ARGS = {"train.max_steps": 45, "train.eval_every": 20, "train.ckpt_every": 4, "train.ema": True,
        "model.dropout": 0.2}


def _train(run_dir, *extra):
    return run_r1("train", "configs/cls/digits.yaml", *tiny_cls_overrides(run_dir, **ARGS), *extra,
                  "--no-progress")


def test_sigkill_then_resume_matches_uninterrupted(tmp_path):
    # the uninterrupted reference in this process; the killed run and its resume in processes of their own
    ref = run_cli("train", str(ROOT / "configs/cls/digits.yaml"), *tiny_cls_overrides(tmp_path / "ref", **ARGS), "--no-progress")
    assert ref.returncode == 0, ref.stderr

    run_dir = tmp_path / "killed"
    cmd = [sys.executable, "-m", "r1.cli", "train", "configs/cls/digits.yaml",
           *tiny_cls_overrides(run_dir, **ARGS), "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    last = run_dir / "checkpoints" / "last.pt"
    deadline = time.time() + 240
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert last.exists(), "the run never wrote a checkpoint before being killed"
    assert not (run_dir / "metrics.json").exists(), "the run finished before it could be killed"

    resumed = _train(run_dir, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in (run_dir / "log.txt").read_text()

    a, b = load_file(str(tmp_path / "ref/model.safetensors")), load_file(str(run_dir / "model.safetensors"))
    assert a.keys() == b.keys()
    assert all((a[k] == b[k]).all() for k in a), "weights differ after resume"
    ma = json.loads((tmp_path / "ref/metrics.json").read_text())
    mb = json.loads((run_dir / "metrics.json").read_text())
    for timing in ("train/time_s", "train/cpu_s"):  # how long it took is not part of the result
        ma.pop(timing), mb.pop(timing)
    assert ma == mb


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    proc = run_cli("train", str(ROOT / "configs/cls/digits.yaml"), *tiny_cls_overrides(tmp_path / "none", **ARGS), "--resume")
    assert proc.returncode == 2 and "--resume: no checkpoint at" in proc.stderr
