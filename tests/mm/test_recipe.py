"""recipes/mm-sortofclevr.yaml end to end on a few steps: teacher -> feature-distilled student ->
its two-input ONNX and static int8 -> report with the baselines' rows (a few minutes: `-m slow`)."""
import json

import pytest
from safetensors.torch import load_file

from r1.pipeline import load_recipe, run_pipeline
from tests.conftest import ROOT

TINY = ["run.threads=1", "train.max_steps=2", "train.eval_every=2", "train.log_every=1", "sched.warmup_steps=1",
        "data.train_images=30", "data.val_images=6", "data.test_images=6", "data.batch_size=16"]


@pytest.mark.slow
def test_mm_recipe_distils_and_reports_baselines(tmp_path):
    plan = load_recipe(ROOT / "recipes/mm-sortofclevr.yaml", TINY)
    plan.dir = tmp_path / "mm"
    plan.stages[-1].throughput_batch = 4
    for stage in plan.stages[:-1]:  # the stages' own step counts come after the recipe-wide overrides
        if stage.kind == "train":
            stage.overrides = [*stage.overrides, "train.max_steps=2", "train.eval_every=2"]
    run_pipeline(plan)
    log = (plan.dir / "student_kd" / "log.txt").read_text()
    assert " kd " in log and " feature " in log
    assert not any(k.startswith("features.") for k in load_file(plan.dir / "student_kd" / "model.safetensors"))
    report = json.loads((plan.dir / "report.json").read_text())
    rows = {r["name"]: r for r in report["rows"]}
    assert list(rows) == ["teacher", "student_kd", "onnx_student", "int8_student", "cnn_mlp", "cnn_rn"]
    assert rows["int8_student"]["runtime"] == rows["onnx_student"]["runtime"] == "onnxruntime"
    assert rows["int8_student"]["size_mb"] < rows["onnx_student"]["size_mb"]
    assert rows["cnn_mlp"]["baseline"] and rows["cnn_rn"]["baseline"] and "baseline" not in rows["student_kd"]
    assert rows["teacher"]["params"] >= 4 * rows["student_kd"]["params"]
    assert all(r["metric_name"] == "test/accuracy" and r["metric"] is not None for r in rows.values())
    assert report["verdict"]["deploy"] not in ("cnn_mlp", "cnn_rn")
    assert not {"cnn_mlp", "cnn_rn"} & set(report["verdict"]["pareto"])
    md = (plan.dir / "report.md").read_text()
    assert "| cnn_rn (baseline) |" in md and "| baseline |" not in md.splitlines()[0]
