"""recipes/lm-shakespeare.yaml on a tiny budget: teacher -> KD student -> int8 -> a report with LM rows."""
import json

import pytest

from r1.pipeline import load_recipe, run_pipeline
from tests.conftest import ROOT


def _text(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("".join(chr(97 + (i * 7 + i // 13) % 26) + (" " if i % 9 == 0 else "") for i in range(9000)))
    return path


@pytest.mark.integration
def test_lm_recipe_teacher_kd_student_int8_report(tmp_path):
    plan = load_recipe(ROOT / "recipes/lm-shakespeare.yaml", [
        "run.threads=1", "train.max_steps=3", "train.eval_every=3", f"data.path={_text(tmp_path)}",
        f"data.cache_dir={tmp_path / 'cache'}", "data.eval_batch_size=64", "model.flavor=tiny",
        "data.block_size=32"])
    plan.dir = tmp_path / "lm"
    student = plan.stages[1]
    student.overrides = [o.replace("model.n_embd=64", "model.n_embd=16") for o in student.overrides]  # tiny: 32
    run_pipeline(plan)
    assert "kd " in (plan.dir / "student_kd" / "log.txt").read_text()
    report = json.loads((plan.dir / "report.json").read_text())
    rows = {r["name"]: r for r in report["rows"]}
    assert list(rows) == ["teacher", "student_kd", "int8_student"]
    for r in rows.values():
        assert r["metric_name"] == "val/loss" and r["metric"] > 0
        assert r["throughput_bs1"] > 0 and r["throughput_bs8"] > 0 and r["speed_unit"] == "tokens"
        assert r["latency_ms_p95"] >= r["latency_ms_p50"] > 0
        # batch-1 latency is ms per generated token
        assert r["throughput_bs1"] == pytest.approx(1e3 / r["latency_ms_p50"], rel=0.01)
    assert rows["student_kd"]["params"] < rows["teacher"]["params"]
    assert rows["int8_student"]["runtime"] == "onnxruntime" and rows["int8_student"]["size_mb"] < rows["student_kd"]["size_mb"]
    assert rows["teacher"]["onnx_ms_p50"] > 0 and rows["int8_student"]["float_ms_p50"] > 0
    assert abs(rows["int8_student"]["metric"] - rows["student_kd"]["metric"]) < 0.05  # int8 scores like its source
    md = (plan.dir / "report.md").read_text()
    assert md.startswith("**Verdict:** deploy `") and "ms per generated token" in md and "throughput_bs8" in md


def test_r1_bench_gives_lm_generation_rows(tmp_path):
    from r1.bench.latency import compare_runtimes
    from r1.config import load_config
    from r1.train import fit

    fit(load_config(ROOT / "configs/lm/shakespeare-char.yaml", [
        "model.flavor=tiny", "data.block_size=32", f"data.path={_text(tmp_path)}", "train.max_steps=1",
        "train.eval_every=1", "model.exit_calibrate=0", "run.threads=1", f"data.cache_dir={tmp_path / 'cache'}",
        f"run.dir={tmp_path / 'r'}"]))
    rows = compare_runtimes(tmp_path / "r", [1, 2], ("torch", "onnx-int8"), threads=1, runs=2)
    assert [(r["runtime"], r["batch"]) for r in rows] == [("torch", 1), ("torch", 2), ("onnx-int8", 1), ("onnx-int8", 2)]
    for r in rows:
        assert r["unit"] == "tokens" and r["runs"] == 2 and r["throughput"] == pytest.approx(r["batch"] / r["p50"])
    from r1.bench.report import latency_table
    table = latency_table(rows)
    assert "| tokens/s |" in table and "ms per generation step" in table


@pytest.mark.parametrize("name", ["r1_lm", "gpt"])
def test_lm_kd_reads_the_students_logits_from_its_loss_pass(name):
    import copy

    import torch

    from r1.models.lm.family import lm_kd
    from r1.registry import build_model

    torch.manual_seed(0)
    student, teacher = build_model(name, flavor="tiny", num_classes=20), build_model(name, flavor="tiny", num_classes=20)
    idx = torch.randint(0, 20, (3, 16))
    calls = []
    student.register_forward_hook(lambda m, args, out: calls.append(1))
    task, s_logits, t_logits, mask = lm_kd(student, teacher.eval(), idx, idx.roll(-1, 1))
    assert len(calls) == 1 and "lm" in task and s_logits.requires_grad and mask.all()
    torch.testing.assert_close(s_logits, student(idx))
    assert "train_logits" not in student.__dict__  # taken: nothing left that a deepcopy would trip on
    copy.deepcopy(student)
