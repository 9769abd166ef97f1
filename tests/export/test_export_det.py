"""Detector export: raw head outputs match torch at another batch size, and the onnxruntime
Predictor (NMS outside the graph) gives the same final boxes as the torch model."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from r1.artifacts import save_artifact
from r1.inference.predictor import Predictor
from r1.onnx.export import export_onnx
from r1.registry import build_model

META = {"classes": ["a", "b", "c"], "num_classes": 3,
        "preprocess": {"size": [128, 128], "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                       "letterbox": True}}


@pytest.mark.slow  # the dynamo export of the detector takes ~30 s on these CPUs
def test_r1_det_parity_and_same_boxes(tmp_path):
    model = build_model("r1_det", flavor="tiny", num_classes=3, score_thresh=0.3).eval()
    with torch.no_grad():  # the prior bias (p = 0.01) leaves nothing above the threshold
        model.head.cls_out.bias.fill_(0.0)
    save_artifact(model, tmp_path / "det", META)
    report = export_onnx(tmp_path / "det", tmp_path / "det.onnx", trace_batch=2, verify_batch=3)
    assert report["outputs"] == ["cls_logits", "boxes"] and report["max_abs_diff"] <= 1e-4
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (90 + 10 * i, 120, 3), dtype=np.uint8)) for i in range(3)]
    a = Predictor.load(tmp_path / "det").predict(images)
    b = Predictor.load(tmp_path / "det.onnx").predict(images)
    for ra, rb in zip(a, b):
        assert ra["labels"] == rb["labels"] and ra["class_ids"] == rb["class_ids"]
        np.testing.assert_allclose(ra["boxes"], rb["boxes"], atol=0.05)
        np.testing.assert_allclose(ra["scores"], rb["scores"], atol=1e-3)
