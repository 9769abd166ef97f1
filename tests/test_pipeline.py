"""The pipeline: stages chained through their outputs, skip on re-run, clear failures, the report."""
from __future__ import annotations

import json
import logging

import pytest
import yaml

from r1.errors import ConfigError
from r1.pipeline import StageFailed, load_recipe, run_pipeline
from tests.conftest import ROOT

FAST = ["run.threads=1", "train.max_steps=6", "train.eval_every=3", "data.batch_size=32", "data.img_size=16"]


def _recipe(tmp_path, stages, overrides=FAST):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "dir": str(tmp_path / "run"), "overrides": overrides,
                                    "stages": stages}))
    return path


def _cfg(name):
    return str(ROOT / "configs/cls" / name)


@pytest.mark.integration
def test_full_chain_report_and_skip_on_rerun(tmp_path):
    stages = [
        {"name": "teacher", "kind": "train", "config": _cfg("digits-teacher.yaml")},
        {"name": "student", "kind": "train", "config": _cfg("digits.yaml")},
        {"name": "student_kd", "kind": "train", "config": _cfg("digits.yaml"), "overrides": ["distill.teacher=@teacher"]},
        {"name": "pruned", "kind": "prune", "source": "student_kd", "target": 0.3, "step": 0.2, "finetune_steps": 2,
         "final_steps": 3},
        {"name": "int8", "kind": "quantize", "source": "pruned", "calib_batches": 2},
        {"name": "report", "kind": "bench", "rows": ["teacher", "student", "student_kd", "pruned", "int8"],
         "runs": 20, "throughput_batch": 8, "threads": 1},
    ]
    recipe = _recipe(tmp_path, stages)
    outputs = run_pipeline(recipe)
    report = json.loads((tmp_path / "run/report.json").read_text())
    names = [r["name"] for r in report["rows"]]
    assert names == ["teacher", "student", "student_kd", "pruned", "int8"]
    for row in report["rows"]:
        for key in ("params", "size_mb", "latency_ms_p50", "latency_ms_p95", "throughput_bs8", "metric_name", "metric"):
            assert row[key] is not None, (row["name"], key)
        assert row["latency_ms_p95"] >= row["latency_ms_p50"] > 0 and 0 <= row["metric"] <= 1
    rows = {r["name"]: r for r in report["rows"]}
    assert rows["pruned"]["params"] <= 0.7 * rows["student_kd"]["params"]
    assert rows["int8"]["runtime"] == "onnxruntime" and rows["int8"]["size_mb"] < rows["pruned"]["size_mb"] / 2
    for png in ("metric_vs_latency.png", "size.png", "training_curves.png"):
        assert (tmp_path / "run/report" / png).is_file()
    # every torch row is also timed in onnxruntime; the int8 row beside its own float graph; the verdict opens
    assert all(rows[n]["onnx_ms_p50"] > 0 for n in ("teacher", "student", "student_kd", "pruned"))
    assert rows["int8"]["float_ms_p50"] > 0
    assert rows["pruned"]["mmacs"] < rows["student_kd"]["mmacs"] < rows["teacher"]["mmacs"]
    prune = json.loads((tmp_path / "run/pruned/prune.json").read_text())
    assert prune["by"] == "params" and [set(r) for r in prune["per_round"]][0] == {"params", "macs", "latency_ms"}
    assert prune["per_round"][-1]["macs"] < prune["per_round"][0]["macs"]
    assert report["verdict"]["deploy"] in names and report["verdict"]["pareto"]
    md = (tmp_path / "run/report.md").read_text()
    assert md.startswith("**Verdict:** deploy `" + report["verdict"]["deploy"]) and "Measured on" in md.split("\n")[0]
    kd_log = (tmp_path / "run/student_kd/log.txt").read_text()
    assert "kd " in kd_log  # the kd loss is logged as its own part
    # Re-run: every stage is skipped, outputs are the same.
    marker = tmp_path / "run/student/stage.json"
    before = marker.stat().st_mtime
    assert run_pipeline(recipe) == outputs and marker.stat().st_mtime == before


def test_bad_recipes_fail_before_training(tmp_path):
    with pytest.raises(ConfigError, match="unknown stage kind 'distil'"):
        load_recipe(_recipe(tmp_path, [{"name": "a", "kind": "distil"}]))
    with pytest.raises(ConfigError, match="refers to 'teacher', which is not an earlier stage"):
        load_recipe(_recipe(tmp_path, [{"name": "s", "kind": "train", "config": _cfg("digits.yaml"),
                                        "overrides": ["distill.teacher=@teacher"]}]))
    with pytest.raises(ConfigError, match="distill.teacher /no/teacher does not exist"):
        load_recipe(_recipe(tmp_path, [{"name": "s", "kind": "train", "config": _cfg("digits.yaml"),
                                        "overrides": ["distill.teacher=/no/teacher"]}]))
    with pytest.raises(ConfigError, match="unknown key optim.lrr"):
        load_recipe(_recipe(tmp_path, [{"name": "s", "kind": "train", "config": _cfg("digits.yaml"),
                                        "overrides": ["optim.lrr=1"]}]))
    with pytest.raises(ConfigError, match="source is required"):
        load_recipe(_recipe(tmp_path, [{"name": "p", "kind": "prune"}]))
    with pytest.raises(ConfigError, match="stage r: refers to 'mlp', which is not an earlier stage"):
        load_recipe(_recipe(tmp_path, [{"name": "s", "kind": "train", "config": _cfg("digits.yaml")},
                                       {"name": "r", "kind": "bench", "rows": ["s"], "baselines": ["mlp"]}]))
    assert not (tmp_path / "run").exists()


def test_failed_stage_is_named(tmp_path):
    stages = [{"name": "broken", "kind": "train", "config": _cfg("digits.yaml"),
               "overrides": ["data.name=imagefolder", f"data.root={tmp_path / 'missing'}"]}]
    with pytest.raises(StageFailed, match="pipeline stopped at stage 'broken' \\(train\\): data.root") as err:
        run_pipeline(_recipe(tmp_path, stages))
    assert err.value.exit_code == 3


@pytest.mark.parametrize("recipe", sorted((ROOT / "recipes").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_recipes_validate(recipe):
    plan = load_recipe(recipe)
    assert plan.stages[-1].kind == "bench" and plan.stages[-1].rows


@pytest.mark.integration
def test_detection_chain_runs_end_to_end(tmp_path):
    """recipes/det-digits.yaml's stages on a few steps: det KD, backbone pruning, export, int8, report."""
    det = str(ROOT / "configs/det/digits.yaml")
    stages = [
        {"name": "teacher", "kind": "train", "config": det},
        {"name": "student_kd", "kind": "train", "config": det,
         "overrides": ["model.flavor=tiny", "distill.teacher=@teacher"]},
        {"name": "pruned", "kind": "prune", "source": "student_kd", "target": 0.2, "step": 0.2, "finetune_steps": 2,
         "final_steps": 2},
        {"name": "int8", "kind": "quantize", "source": "pruned", "calib_batches": 2},
        {"name": "report", "kind": "bench", "rows": ["teacher", "pruned", "int8"], "runs": 20,
         "throughput_batch": 4, "threads": 1},
    ]
    small = ["run.threads=1", "train.max_steps=2", "train.eval_every=2", "data.num_train=32", "data.num_val=8",
             "data.num_test=8", "data.batch_size=8", "model.flavor=tiny"]
    run_pipeline(_recipe(tmp_path, stages, overrides=small))
    rows = {r["name"]: r for r in json.loads((tmp_path / "run/report.json").read_text())["rows"]}
    assert rows["int8"]["metric_name"] == "test/mAP" and rows["int8"]["runtime"] == "onnxruntime"
    assert rows["pruned"]["params"] < rows["teacher"]["params"]
    assert "kd " in (tmp_path / "run/student_kd/log.txt").read_text()


MLP = ["run.threads=1", "train.max_steps=2", "train.eval_every=2", "train.log_every=1", "data.batch_size=32", "data.img_size=16",
       "model.name=mlp", "model.flavor=tiny", "model.in_features=768"]


def _two_stages(tmp_path, b_overrides=()):
    return _recipe(tmp_path, [{"name": "a", "kind": "train", "config": _cfg("digits.yaml")},
                              {"name": "b", "kind": "train", "config": _cfg("digits.yaml"),
                               "overrides": ["train.init_from=@a", *b_overrides]}], overrides=MLP)


def _steps(run_dir) -> list[int]:
    recs = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    return [r["step"] for r in recs if "train/loss" in r]


def test_changed_stages_rerun_with_their_dependents_and_say_why(tmp_path, caplog):
    run = tmp_path / "run"
    recipe = _two_stages(tmp_path)
    run_pipeline(recipe)
    marker = run / "b/stage.json"
    before = marker.stat().st_mtime
    # A stage.json of an older r1 (no fingerprint) is taken as done; run.threads changes nothing computed.
    legacy = json.loads((run / "a/stage.json").read_text())
    (run / "a/stage.json").write_text(json.dumps({"output": legacy["output"], "seconds": 1.0}))
    caplog.set_level(logging.INFO, logger="r1")
    run_pipeline(load_recipe(recipe, ["run.threads=2"]))
    assert "stage a: finished before fingerprints were recorded" in caplog.text
    assert "stage 2/2 b (train): unchanged, skipped | elapsed " in caplog.text
    assert marker.stat().st_mtime == before
    assert json.loads((run / "a/stage.json").read_text())["fingerprint"] == legacy["fingerprint"]

    caplog.clear()
    run_pipeline(load_recipe(recipe, ["train.max_steps=3"]))
    assert ("stage a: config changed (train.max_steps 2 -> 3), re-running (the finished run moved to "
            f"{run / 'a.old'})") in caplog.text
    assert "stage b: config changed (train.max_steps 2 -> 3); input a changed, re-running" in caplog.text
    assert "stage 2/2 b (train): running | elapsed " in caplog.text and ", ETA " in caplog.text
    assert _steps(run / "a") == [1, 2, 3] and _steps(run / "a.old") == [1, 2]  # a fresh run, not a resume
    assert not (run / "a/stage.pending.json").exists()

    # b interrupted under its old settings, then its recipe entry changes: the old run is set aside,
    # not resumed from its checkpoints/last.pt; a is unchanged and skipped.
    (run / "b/stage.json").rename(run / "b/stage.pending.json")
    assert (run / "b/checkpoints/last.pt").is_file()
    caplog.clear()
    run_pipeline(load_recipe(_two_stages(tmp_path, ["optim.lr=1e-3"]), ["train.max_steps=3"]))
    assert "stage 1/2 a (train): unchanged, skipped" in caplog.text
    assert ("stage b: config changed (optim.lr 0.003 -> 0.001), re-running (the unfinished run moved to"
            in caplog.text)
    assert _steps(run / "b") == [1, 2, 3]


def test_pipeline_dir_option_and_colliding_overrides(tmp_path):
    from typer.testing import CliRunner

    from r1.cli import app

    recipe = _two_stages(tmp_path)
    assert load_recipe(recipe, dir=tmp_path / "elsewhere").dir == tmp_path / "elsewhere"
    with pytest.raises(ConfigError, match=r"override 'run.dir=x' is not allowed: .* --dir DIR"):
        load_recipe(recipe, ["run.dir=x"])
    with pytest.raises(ConfigError, match=r"stage b: override 'run.name=y' is not allowed"):
        load_recipe(_two_stages(tmp_path, ["run.name=y"]))
    assert "--dir" in CliRunner().invoke(app, ["pipeline", "--help"]).output


def test_eta_uses_per_kind_history_or_says_unknown():
    """The quickstart's 11 stages mix train, prune, export, quantize and bench: each kind is estimated
    from stages of its own kind, and a kind not timed yet is unknown (not a train stage's mean)."""
    from r1.pipeline import _Clock

    stages = load_recipe(ROOT / "recipes/quickstart.yaml").stages
    assert [s.kind for s in stages] == ["train"] * 3 + ["prune", "export", "quantize", "export", "quantize",
                                                         "train", "quantize", "bench"]
    clock = _Clock()
    assert clock.banner(1, stages, "running").endswith(
        "ETA unknown (no train, prune, export, quantize, bench stage timed yet)")
    clock.add("train", 100.0)
    clock.add("train", 50.0)
    # stage 3 on: student_kd and qat train (2 x the 75 s mean); the others of kinds not timed yet
    assert clock.banner(3, stages, "running").endswith(
        "ETA 2m30s + unknown (prune, export, quantize, bench: no stage of that kind timed yet)")
    for kind, seconds in (("train", 75.0), ("prune", 30.0), ("export", 4.0)):
        clock.add(kind, seconds)
    # stage 6 on: quantize, export (4 s), quantize, train (75 s), quantize, bench
    assert clock.banner(6, stages, "running").endswith("ETA 1m19s + unknown (quantize, bench: no stage of "
                                                       "that kind timed yet)")
    clock.add("quantize", 10.0)
    clock.add("bench", 5.0)
    assert clock.banner(11, stages, "running").endswith("ETA 5s")
    assert clock.eta(["quantize", "quantize", "train"]) == (95.0, [])
