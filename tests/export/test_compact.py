"""Exported and quantized ONNX files carry no exporter debris: no per-node stack traces or machine
paths, short tensor names, and the graph still computes the same outputs."""
from __future__ import annotations

import os

import numpy as np
import onnx
import torch

from r1.onnx.compact import compact_onnx
from r1.onnx.export import export_onnx
from r1.onnx.graph import ort_session
from r1.registry import build_model
from tests.export.test_export_onnx import META, _spread_weights


def test_export_strips_node_metadata_and_paths(tmp_path):
    model = _spread_weights(build_model("r1_mobilenetv3", flavor="tiny", num_classes=10))
    out = tmp_path / "m.onnx"
    export_onnx(model, out, meta=META, family="cls")
    proto = onnx.load(str(out))
    assert all(len(n.metadata_props) == 0 and not n.doc_string for n in proto.graph.node)
    assert os.getcwd().encode() not in out.read_bytes()  # no stack traces naming this machine's files
    inner = {t.name for t in proto.graph.initializer}
    assert max(len(n) for n in inner) <= 5
    assert [i.name for i in proto.graph.input] == ["images"]


def test_compaction_keeps_outputs(tmp_path):
    model = _spread_weights(build_model("r1_mobilenetv3", flavor="tiny", num_classes=10))
    out = tmp_path / "m.onnx"
    export_onnx(model, out, meta=META, family="cls", verify=False)
    x = torch.randn(3, 3, 32, 32)
    before = ort_session(out).run(None, {"images": x.numpy()})[0]
    size = out.stat().st_size
    compact_onnx(out)  # idempotent
    assert out.stat().st_size <= size
    np.testing.assert_allclose(ort_session(out).run(None, {"images": x.numpy()})[0], before, atol=0, rtol=0)
