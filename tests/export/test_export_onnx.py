"""ONNX export: every registered classification model, parity with torch at another batch size."""
from __future__ import annotations

import json
import math

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn

from r1.onnx.export import export_onnx
from r1.onnx.graph import ort_session, read_onnx_meta
from r1.registry import build_model, list_models

META = {"classes": [f"c{i}" for i in range(10)], "num_classes": 10,
        "preprocess": {"size": [32, 32], "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}}


def _spread_weights(model: nn.Module) -> nn.Module:
    """Random init gives logits ~1e-3 (a 1e-4 check would be vacuous); make them O(1)."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.Linear):
            m.weight.data = torch.randn(m.weight.shape, generator=g) / math.sqrt(m.in_features)
        elif isinstance(m, nn.BatchNorm2d):  # non-trivial running stats: eval-mode BN is really tested
            m.running_mean.uniform_(-0.1, 0.1, generator=g)
            m.running_var.uniform_(0.5, 1.5, generator=g)
    model.eval()
    last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():  # scale the classifier so the largest logit is ~5
        scale = 5.0 / float(model(torch.randn(4, 3, 32, 32, generator=g)).abs().max())
        last.weight.mul_(scale)
        last.bias.mul_(scale)
    return model


@pytest.mark.parametrize("name", list_models(family="cls"))
def test_onnx_parity_other_batch_size(name, tmp_path):
    model = _spread_weights(build_model(name, flavor="tiny", num_classes=10))
    out = tmp_path / f"{name}.onnx"
    report = export_onnx(model, out, meta=META, family="cls", trace_batch=2, verify_batch=3)
    assert report["max_abs_diff"] <= 1e-4
    session = ort_session(out)
    assert session.get_inputs()[0].shape[0] == "batch"  # symbolic, not the traced 2
    for batch in (1, 5):
        x = torch.randn(batch, 3, 32, 32)
        with torch.no_grad():
            ref = model(x).numpy()
        got = session.run(None, {"images": x.numpy()})[0]
        assert got.shape == (batch, 10)
        assert np.abs(ref).max() > 0.5, "logits too small for a meaningful parity check"
        np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)


def test_metadata_and_static_batch(tmp_path):
    model = _spread_weights(build_model("mlp", flavor="tiny", num_classes=10))
    out = tmp_path / "static.onnx"
    report = export_onnx(model, out, meta=META, family="cls", dynamic_batch=False, trace_batch=4)
    assert report["verify_batch"] == 4
    props = read_onnx_meta(out)
    assert json.loads(props["r1.classes"]) == META["classes"]
    assert json.loads(props["r1.preprocess"]) == META["preprocess"]
    assert props["r1.family"] == "cls" and json.loads(props["r1.model"])["name"] == "mlp"
    assert json.loads(props["r1.input"])["shape"] == [4, 3, 32, 32]
    assert ort_session(out).get_inputs()[0].shape == [4, 3, 32, 32]
    assert {p.key for p in onnx.load(str(out)).metadata_props} >= {"r1.format", "r1.meta"}


def test_quiet_tools_drops_only_the_libraries_unactionable_notes(capsys, caplog):
    """torch.export's axis renaming, onnx_ir's empty-attribute typing (the NMS graph) and onnxruntime's
    pre-processing hint (dynamic int8) are not shown during an export or quantization; other warnings are."""
    import logging
    import warnings

    from r1.onnx.graph import quiet_tools

    with warnings.catch_warnings(record=True) as seen, quiet_tools():
        warnings.warn("# The axis name: batch will not be used, since it shares the same shape constraints with "
                      "another axis: batch.", UserWarning, stacklevel=2)
        warnings.warn("something a user should see", UserWarning, stacklevel=2)
        logging.getLogger("onnx_ir._convenience").warning("Attribute type is ambiguous because it is an empty "
                                                          "sequence. Please create an Attr with an explicit type.")
        logging.warning("Please consider to run pre-processing before quantization. Refer to example: ...")
        logging.getLogger("onnx_ir._convenience").warning("another note")
    assert [str(w.message) for w in seen] == ["something a user should see"]
    assert [r.getMessage() for r in caplog.records] == ["another note"]
    assert not logging.getLogger().filters and not logging.getLogger("onnx_ir._convenience").filters
