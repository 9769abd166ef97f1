"""DDP under torchrun (gloo, 2 processes) gives the same losses as 1 process at the same global batch."""
from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.conftest import ROOT, run_r1, tiny_cls_overrides, torchrun

OVER = {"model.name": "mlp", "model.flavor": "tiny", "model.in_features": 768, "train.max_steps": 8,
        "train.log_every": 1, "train.eval_every": 4, "data.augment": False}


def _losses(run_dir) -> list[float]:
    rows = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    return [r["train/loss"] for r in rows if "train/loss" in r]


@pytest.mark.integration
def test_two_process_gloo_matches_single_process(tmp_path):
    single = run_r1("train", "configs/cls/digits.yaml", *tiny_cls_overrides(tmp_path / "one", **OVER),
                    "--no-progress")
    assert single.returncode == 0, single.stderr
    cmd = torchrun(2, "train", "configs/cls/digits.yaml", *tiny_cls_overrides(tmp_path / "two", **OVER), "--no-progress")
    ddp = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    one, two = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert len(one) == len(two) == 8
    assert one == pytest.approx(two, abs=1e-5)
    assert "2 procs" in (tmp_path / "two" / "log.txt").read_text()
