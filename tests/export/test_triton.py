"""`r1 export RUN --format triton`: a Triton model repository whose config.pbtxt parses into Triton's
own ModelConfig protobuf (tritonclient's model_config_pb2) and whose inputs/outputs (names, data
types, dims without the batch dimension) are those of the ONNX file beside it, for a classifier
and for a detector exported with NMS in the graph."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from r1.artifacts import save_artifact
from r1.errors import ConfigError
from r1.export.cli import run_export
from r1.export.triton import ONNX_TO_TRITON, TritonSettings, model_config_proto, parse_config, write_repository
from r1.onnx.export import export_onnx
from r1.onnx.graph import ort_session
from r1.registry import build_model
from tests.conftest import run_cli, run_r1

if model_config_proto() is None:
    pytest.skip("tritonclient (a dev dependency) is not installed", allow_module_level=True)


def _parsed(model_dir):
    return parse_config((model_dir / "config.pbtxt").read_text())


def _check_against_onnx(config, onnx_path) -> None:
    """Every graph input/output appears in the config with its ONNX type and its shape minus the batch."""
    graph = onnx.load(str(onnx_path)).graph
    for values, entries in ((graph.input, config.input), (graph.output, config.output)):
        assert [v.name for v in values] == [e.name for e in entries]
        for v, e in zip(values, entries):
            t = v.type.tensor_type
            shape = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
            assert shape[0] == -1  # dynamic batch, left to Triton (max_batch_size > 0)
            data_type = e.DESCRIPTOR.fields_by_name["data_type"].enum_type.values_by_number[e.data_type].name
            assert data_type == ONNX_TO_TRITON[t.elem_type]
            if shape[1:]:
                assert list(e.dims) == shape[1:] and not e.HasField("reshape")
            else:  # per-sample scalar: [1] reshaped to []
                assert list(e.dims) == [1] and e.HasField("reshape") and list(e.reshape.shape) == []


@pytest.fixture(scope="module")
def classifier_repo(trained_digits, tmp_path_factory):
    repo = tmp_path_factory.mktemp("triton") / "repo"
    res = run_r1("export", str(trained_digits), "--format", "triton", "--out", str(repo), "--max-batch", "16",
                 "export.triton_queue_delay_us=250")
    assert res.returncode == 0, res.stderr
    return repo, json.loads(res.stdout), trained_digits


def test_classifier_repository_layout_and_config(classifier_repo):
    repo, report, run = classifier_repo
    name = run.name
    model_dir = repo / name
    assert report["model"] == name and report["checked_with_triton_proto"] is True
    assert (model_dir / "1" / "model.onnx").is_file() and report["max_abs_diff"] <= 1e-4
    config = _parsed(model_dir)
    assert config.name == name and config.platform == "onnxruntime_onnx" and config.max_batch_size == 16
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 8, 16]
    assert config.dynamic_batching.max_queue_delay_microseconds == 250
    assert len(config.instance_group) == 1 and config.instance_group[0].count == 1
    assert config.instance_group[0].kind == config.instance_group[0].KIND_CPU
    _check_against_onnx(config, model_dir / "1" / "model.onnx")
    classes = json.loads((run / "model.json").read_text())["meta"]["classes"]
    assert (model_dir / "labels.txt").read_text().splitlines() == [str(c) for c in classes]
    assert [o.label_filename for o in config.output] == ["labels.txt"]  # the logits: one score per class
    assert list(config.output[0].dims) == [len(classes)]


def test_classifier_onnx_runs_at_the_configured_shapes(classifier_repo):
    repo, report, run = classifier_repo
    model_dir = repo / run.name
    config = _parsed(model_dir)
    session = ort_session(model_dir / "1" / "model.onnx")
    x = np.random.default_rng(0).standard_normal((5, *config.input[0].dims)).astype(np.float32)
    (out,) = session.run(None, {config.input[0].name: x})
    assert out.shape == (5, *config.output[0].dims)


def test_gpu_instances_and_preferred_sizes_from_overrides(classifier_repo, tmp_path):
    repo, _, run = classifier_repo  # from the repository's ONNX file: the settings are what is tested, not a new export
    res = run_cli("export", str(repo / run.name / "1" / "model.onnx"), "--format", "triton", "--out", str(tmp_path / "r"),
                  "export.triton_instance=gpu", "export.triton_instances=2", "export.triton_preferred_batch=[2,8]",
                  "export.triton_name=digits_v2")
    assert res.returncode == 0, res.stderr
    config = _parsed(tmp_path / "r" / "digits_v2")
    assert config.name == "digits_v2" and config.max_batch_size == 32
    assert config.instance_group[0].kind == config.instance_group[0].KIND_GPU and config.instance_group[0].count == 2
    assert list(config.dynamic_batching.preferred_batch_size) == [2, 8]


def test_bad_settings_are_one_line_errors(trained_digits, tmp_path):
    res = run_cli("export", str(trained_digits), "--format", "triton", "--out", str(tmp_path / "r"),
                  "--max-batch", "4", "export.triton_preferred_batch=[2,8]")
    assert res.returncode == 2 and "export.triton_preferred_batch" in res.stderr and "1..4" in res.stderr
    res = run_cli("export", str(trained_digits), "--format", "triton", "export.triton_instance=tpu")
    assert res.returncode == 2 and "export.triton_instance" in res.stderr


def test_fixed_batch_onnx_is_refused(tmp_path):
    torch.manual_seed(0)
    model = build_model("mlp", flavor="tiny", num_classes=3, in_features=192)
    meta = {"classes": ["a", "b", "c"], "num_classes": 3,
            "preprocess": {"size": [8, 8], "mean": [0.5] * 3, "std": [0.5] * 3}}
    export_onnx(model, tmp_path / "fixed.onnx", meta=meta, family="cls", dynamic_batch=False)
    with pytest.raises(ConfigError, match="dynamic batch"):
        write_repository(tmp_path / "fixed.onnx", tmp_path / "repo", TritonSettings())


@pytest.mark.integration  # the dynamo export of a detector with NMS takes ~20-30 s
def test_detector_with_nms_in_the_graph(tmp_path):
    torch.manual_seed(0)
    model = build_model("r1_det", flavor="tiny", num_classes=3).eval()
    meta = {"classes": ["a", "b", "c"], "num_classes": 3,
            "preprocess": {"size": [64, 64], "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                           "letterbox": True}}
    save_artifact(model, tmp_path / "det", meta)
    report = run_export(tmp_path / "det", "triton", out=tmp_path / "repo", nms=True, max_batch=8)
    model_dir = tmp_path / "repo" / "det"
    config = _parsed(model_dir)
    assert report["checked_with_triton_proto"] and config.max_batch_size == 8
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 8]
    _check_against_onnx(config, model_dir / "1" / "model.onnx")
    outputs = {o.name: o for o in config.output}
    assert set(outputs) == {"boxes", "scores", "labels", "num_dets"}
    assert list(outputs["boxes"].dims) == [100, 4] and list(outputs["num_dets"].dims) == [1]
    assert not any(o.label_filename for o in config.output)  # no output holds one score per class
    assert (model_dir / "labels.txt").read_text().splitlines() == ["a", "b", "c"]
    session = ort_session(model_dir / "1" / "model.onnx")
    got = session.run(None, {"images": np.zeros((3, 3, 64, 64), np.float32)})
    for o, arr in zip(config.output, got):
        assert arr.shape == (3, *([] if o.HasField("reshape") else o.dims))
