"""Curriculum learning: the competence schedule, the remap's guarantees, and an exact resume."""
from __future__ import annotations

import json

import pytest
import torch

from r1.train.curriculum import Remap, competence
from r1.train.sampler import ResumableSampler
from tests.conftest import ROOT


def test_competence_rises_from_start_to_one():
    assert competence(0.0, 0.2) == pytest.approx(0.2) and competence(1.0, 0.2) == 1.0 == competence(5.0, 0.2)
    values = [competence(p / 10, 0.2) for p in range(11)]
    assert values == sorted(values)
    assert competence(0.5, 0.2, "linear") == pytest.approx(0.6)


def test_remap_serves_only_eligible_items_and_everything_after_the_period():
    difficulty = torch.tensor([2.0, 0.0, 1.0, 0.0, 2.0, 1.0, 0.0, 0.0, 1.0, 2.0])
    remap = Remap(difficulty, period=100, start=0.3, schedule="linear", seed=0)
    for pos in (0, 10, 50, 99):
        allowed = {int(remap.by_rank[r]) for r in range(remap.eligible(pos))}
        assert all(remap(i, pos) in allowed for i in range(10))
        assert all(difficulty[i] <= max(difficulty[j] for j in allowed) for i in allowed)  # easiest first
    assert {remap(i, 0) for i in range(10)} <= {1, 3, 6, 7}  # the start: only the easiest 30%
    assert [remap(i, 100) for i in range(10)] == list(range(10))  # after the period: every item as drawn
    assert remap(4, 7) == Remap(difficulty, 100, 0.3, "linear", 0)(4, 7)  # a pure function


def test_sampler_with_a_curriculum_resumes_exactly():
    difficulty = torch.arange(50, dtype=torch.float32) % 5
    full = ResumableSampler(50, seed=3)
    full.remap = Remap(difficulty, 60, 0.2, "sqrt", 3)
    full.set_epoch(1)
    whole = list(full)
    resumed = ResumableSampler(50, seed=3)
    resumed.remap = Remap(difficulty, 60, 0.2, "sqrt", 3)
    resumed.set_epoch(1, start=17)
    assert list(resumed) == whole[17:]


def test_mm_run_with_a_curriculum_logs_it_and_rejects_data_without_difficulty(tmp_path):
    from r1.config import load_config
    from r1.errors import ConfigError
    from r1.train import fit

    run = tmp_path / "mm"
    fit(load_config(ROOT / "configs/mm/sortofclevr.yaml", [
        f"run.dir={run}", "data.train_images=20", "data.val_images=5", "data.test_images=5", "data.batch_size=8",
        "train.max_steps=3", "train.eval_every=0", "sched.warmup_steps=1", "curriculum.schedule=sqrt",
        "curriculum.start=0.5"]))
    assert "curriculum (sqrt): the easiest 50%" in (run / "log.txt").read_text()
    assert json.loads((run / "metrics.json").read_text())["train/steps"] == 3
    with pytest.raises(ConfigError, match="no per-item difficulty"):
        fit(load_config(ROOT / "configs/cls/digits.yaml", [
            f"run.dir={tmp_path / 'cls'}", "train.max_steps=1", "curriculum.schedule=linear"]))
