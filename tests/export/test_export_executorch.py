"""ExecuTorch export (`r1 export RUN --format executorch`): the .pte program runs in the ExecuTorch
runtime with the XNNPACK delegate and gives torch's raw outputs; its sidecar carries what an app
needs to pre-process and decode; formats and options it does not support are refused in one line."""
from __future__ import annotations

import json

import pytest

from r1.artifacts import save_artifact
from r1.export.executorch import export_executorch, verify_program
from r1.onnx.export import example_input, get_export_hook
from r1.registry import build_model
from tests.conftest import run_cli

pytest.importorskip("executorch", reason="the mobile extra (make install installs it)")

DET_META = {"classes": ["a", "b", "c"], "num_classes": 3,
            "preprocess": {"size": [96, 96], "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                           "letterbox": True}}


def test_cli_exports_the_classifier_and_it_matches_torch(trained_digits, tmp_path):
    out = tmp_path / "digits.pte"
    res = run_cli("export", str(trained_digits), "--format", "executorch", "--out", str(out))
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["format"] == "executorch" and report["batch"] == 1
    assert report["max_abs_diff"] <= 1e-4 and report["bytes"] == out.stat().st_size > 10_000
    assert report["latency_ms_b1"] > 0 and report["torch_latency_ms_b1"] > 0
    side = json.loads((tmp_path / "digits.pte.json").read_text())
    assert side["r1.family"] == "cls" and json.loads(side["r1.meta"])["num_classes"] == 10
    assert json.loads(side["r1.outputs"]) == ["logits"]


@pytest.mark.slow  # lowering the detector takes ~40-90 s on these CPUs
def test_detector_raw_outputs_match_torch(tmp_path):
    model = build_model("r1_det", flavor="tiny", num_classes=3).eval()
    save_artifact(model, tmp_path / "det", DET_META)
    report = export_executorch(tmp_path / "det", tmp_path / "det.pte", reps=3)
    assert report["family"] == "det" and report["max_abs_diff"] <= 1e-4
    side = json.loads((tmp_path / "det.pte.json").read_text())
    assert json.loads(side["r1.outputs"]) == ["cls_logits", "boxes"] and "r1.det" in side
    hook = get_export_hook("det")  # another input than the export's own check
    net = hook.wrap(model, hook.options).eval()
    x = example_input("det", DET_META, 1, seed=5)
    assert verify_program(tmp_path / "det.pte", net, x, reps=1)["max_abs_diff"] <= 1e-4


@pytest.mark.parametrize("flags, message", [
    (["--nms"], "--nms: not available for --format executorch"),
    (["--int8"], "--int8: not available for --format executorch"),
    (["--dynamic-hw"], "--dynamic-hw: not available for --format executorch"),
    (["--out", "x.onnx"], "must end with .pte for --format executorch"),
])
def test_cli_refuses_what_the_program_cannot_carry(trained_digits, tmp_path, flags, message):
    flags = [f.replace("x.onnx", str(tmp_path / "x.onnx")) for f in flags]
    res = run_cli("export", str(trained_digits), "--format", "executorch", *flags)
    assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr


def test_families_with_their_own_graph_are_refused(tmp_path):
    from r1.errors import ConfigError

    lm = build_model("r1_lm", flavor="tiny", num_classes=40, block_size=16)
    lm.r1_meta, lm.r1_family = {"tokenizer": "char"}, "lm"
    with pytest.raises(ConfigError, match="family 'lm' has its own export graph"):
        export_executorch(lm, tmp_path / "lm.pte")
