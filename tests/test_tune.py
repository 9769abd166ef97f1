"""`r1 tune` end to end on tiny digits runs: pruning, the study dir, kill -9 + resume, --jobs, the stage."""
from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import yaml

from r1.config import load_config
from r1.train import fit
from r1.tune.callback import TrialPruning
from r1.tune.study import TuneOptions, run_study, split
from tests.conftest import ROOT, run_cli, tiny_cls_overrides

DIGITS = ROOT / "configs/cls/digits.yaml"
# seconds-long trials: tiny MobileNetV3 on 16x16 digits, an evaluation every 3 steps
FAST = ["train.max_steps=9", "train.eval_every=3", "train.log_every=3", "data.batch_size=32", "data.img_size=16"]
SPACE = ("optim.lr: {type: float, low: 1.0e-4, high: 3.0e-2, log: true}\n"
         "optim.weight_decay: {type: float, low: 0.0, high: 0.1}\n"
         "sched.name: {type: categorical, choices: [warmup_cosine, constant]}\n")


@pytest.fixture
def space(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(SPACE)
    return path


class _Trial:
    """Stands in for an optuna Trial: prunes at the second report."""
    number = 7

    def __init__(self):
        self.reports = []

    def report(self, value, step):
        self.reports.append((step, value))

    def should_prune(self):
        return len(self.reports) >= 2


def test_pruning_callback_stops_the_run_cleanly(tmp_path):
    cfg = load_config(DIGITS, tiny_cls_overrides(tmp_path / "run", **{"train.max_steps": 12}))
    trial, cb = _Trial(), None
    cb = TrialPruning(trial)
    metrics = fit(cfg, callbacks=[cb])
    assert [s for s, _ in trial.reports] == [3, 6] and cb.pruned_at == 6 and cb.total_steps == 12
    assert metrics["train/steps"] == 6  # stopped after the pruned evaluation ...
    assert (tmp_path / "run/model.safetensors").is_file() and "test/accuracy" in metrics  # ... and ended cleanly


def test_study_writes_best_table_plots_and_best_yaml_trains(tmp_path, space):
    study = tmp_path / "study"
    summary = run_study(TuneOptions(str(DIGITS), str(space), 4, str(study), pruner="median", startup=1,
                                    overrides=["run.threads=1", *FAST]))
    assert sum(summary["trials"].values()) == 4 and summary["trials"].get("COMPLETE", 0) >= 1
    assert summary["steps_without_pruning"] == 4 * 9 and summary["steps_run"] <= 36
    rows = list(csv.DictReader((study / "trials.csv").open()))
    assert [int(r["number"]) for r in rows] == [0, 1, 2, 3]
    for r in rows:
        assert r["state"] in ("COMPLETE", "PRUNED") and int(r["steps"]) in (3, 6, 9)
        assert "optim.lr=" in r["params"] and "sched.name=" in r["params"]
        assert (r["state"] == "PRUNED") == (int(r["steps"]) < 9)
    table = (study / "trials.md").read_text()
    assert "| # | state | val/accuracy |" in table
    # people read 4 significant digits (optim.lr=0.002553); trials.csv, best.yaml and best.json keep the exact value
    shown = re.findall(r"optim\.lr=([0-9.e-]+)", table)
    assert shown and all(float(v) == float(f"{float(v):.4g}") for v in shown)
    for name in ("history", "importances", "parallel"):
        assert (study / "plots" / f"{name}.png").stat().st_size > 1000
    best = json.loads((study / "best.json").read_text())
    completed = [float(r["value"]) for r in rows if r["state"] == "COMPLETE"]
    assert best["val/accuracy"] == pytest.approx(max(completed))
    data = yaml.safe_load((study / "best.yaml").read_text())
    assert data["optim"]["lr"] == pytest.approx(best["params"]["optim.lr"]) and data["run"]["dir"] == ""
    run = tmp_path / "retrain"
    result = run_cli("train", str(study / "best.yaml"), "train.max_steps=3", f"run.dir={run}", "--no-progress")
    assert result.returncode == 0, result.stderr[-2000:]
    assert (run / "model.safetensors").is_file()


@pytest.mark.integration
def test_kill_9_mid_study_then_rerun_completes_the_rest(tmp_path, space):
    study = tmp_path / "study"
    args = [sys.executable, "-m", "r1.cli", "tune", str(DIGITS), "--space", str(space), "--trials", "3",
            "--dir", str(study), "--pruner", "none", "--startup", "2", "run.threads=1", *FAST,
            "train.max_steps=24", "train.eval_every=12"]  # trial 1 is killed as it starts: 24 steps leave seconds to spare
    proc = subprocess.Popen(args, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (study / "trials/0001/history.jsonl").is_file():  # the second trial is training
        assert proc.poll() is None and time.time() < deadline, "study ended before it could be killed"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    import optuna
    before = optuna.load_study(study_name="r1-tune", storage=f"sqlite:///{study / 'tune.db'}").get_trials()
    assert [t.state.name for t in before] == ["COMPLETE", "RUNNING"]
    killed_params = before[1].params
    result = run_cli(*args[3:])  # the re-run in this process: only the kill needs a process of its own
    assert result.returncode == 0, result.stderr[-3000:]
    assert "1 interrupted queued again" in result.stderr and "running 2" in result.stderr
    rows = list(csv.DictReader((study / "trials.csv").open()))
    assert [r["state"] for r in rows] == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    assert rows[1]["note"] == "interrupted (killed)" and rows[2]["note"] == "retry of 1"
    after = optuna.load_study(study_name="r1-tune", storage=f"sqlite:///{study / 'tune.db'}").trials
    assert after[2].params == killed_params  # the interrupted trial ran again with its parameters
    # a finished study re-run runs nothing more
    again = run_cli(*args[3:])
    assert again.returncode == 0 and "3 of 3 trials finished" in again.stderr and "running 0" in again.stderr


def test_split_trials_between_jobs():
    assert split(5, 2) == [3, 2] and split(1, 4) == [1] and split(4, 4) == [1, 1, 1, 1]


@pytest.mark.integration
def test_jobs_2_runs_trials_in_two_processes_with_split_threads(tmp_path, space):
    from r1.train.hardware import physical_cores

    study = tmp_path / "study"
    summary = run_study(TuneOptions(str(DIGITS), str(space), 2, str(study), jobs=2, pruner="none",
                                    overrides=FAST))
    assert summary["trials"] == {"COMPLETE": 2}
    threads = set()
    for n in ("0000", "0001"):
        run = study / "trials" / n
        assert (run / "model.safetensors").is_file()
        threads.add(yaml.safe_load((run / "config.yaml").read_text())["run"]["threads"])
    assert threads == {max(1, physical_cores() // 2)}
    import optuna
    trials = optuna.load_study(study_name="r1-tune", storage=f"sqlite:///{study / 'tune.db'}").trials
    pids = {t.user_attrs["pid"] for t in trials}
    assert len(pids) == 2 and os.getpid() not in pids  # one spawned process per job


def test_tune_stage_in_a_recipe(tmp_path, space):
    from r1.pipeline import run_pipeline

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"name": "t", "dir": str(tmp_path / "run"), "overrides": ["run.threads=1", *FAST],
                                      "stages": [{"name": "search", "kind": "tune", "config": str(DIGITS),
                                                  "space": str(space), "trials": 2, "pruner": "none"},
                                                 {"name": "onnx", "kind": "export", "source": "search"}]}))
    outputs = run_pipeline(recipe)
    best = json.loads((tmp_path / "run/search/best.json").read_text())
    assert outputs["search"] == best["run_dir"] and (tmp_path / "run/search/trials.md").is_file()
    assert outputs["onnx"].endswith("model.onnx")
