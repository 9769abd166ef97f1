"""Detector export with NMS inside the graph (`r1 export --nms`): final boxes from onnxruntime at
batch sizes other than the export's match the torch model's Python post-processing, and the
Predictor and the server take such a model as it is."""
from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from r1.artifacts import save_artifact
from r1.errors import ConfigError
from r1.models.det.export_nms import CONTRACT, OUTPUTS, DetWithNMS, match_detections, unpad
from r1.onnx.export import export_onnx
from r1.onnx.graph import ort_session, read_onnx_meta
from r1.registry import build_model

META = {"classes": ["a", "b", "c"], "num_classes": 3,
        "preprocess": {"size": [128, 128], "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                       "letterbox": True}}


def _detector() -> nn.Module:
    """r1_det tiny with BN statistics from random images and a head spread so that 30-70 boxes
    per image survive NMS (random init scores ~0.01 everywhere: nothing to compare), fewer than
    max_det, so the result does not hinge on near-ties at the cut."""
    torch.manual_seed(0)
    model = build_model("r1_det", flavor="tiny", num_classes=3, score_thresh=0.3)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration batches
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model.forward_raw(torch.randn(4, 3, 128, 128))
        model.head.cls_out.weight.normal_(0, 0.1)
        model.head.cls_out.bias.fill_(-3.5)
        model.head.box_out.weight.normal_(0, 0.02)
    return model.eval()


def _check_same(ref: list[dict], got: list[dict]) -> None:
    assert [len(r["labels"]) for r in ref] == [len(g["labels"]) for g in got]
    assert all(0 < len(r["labels"]) < 100 for r in ref)
    assert match_detections(ref, got) <= 1e-4  # same labels, boxes and scores within 1e-4


def test_fixed_shape_postprocess_equals_python_postprocess():
    model = _detector()
    x = torch.randn(3, 3, 128, 128)
    with torch.no_grad():
        ref, out = model(x), DetWithNMS(model)(x)
    assert [tuple(o.shape) for o in out] == [(3, 100, 4), (3, 100), (3, 100), (3,)]
    got = unpad(out)
    _check_same(ref, got)
    for r, g in zip(ref, got):  # in eager mode, the very same tensors in the same order
        assert torch.equal(r["labels"], g["labels"]) and torch.equal(r["boxes"], g["boxes"])
    n = int(out[3][0])
    assert (out[2][0, n:] == -1).all() and (out[1][0, n:] == 0).all() and (out[0][0, n:] == 0).all()


def test_nms_is_refused_for_classifiers(tmp_path):
    model = build_model("mlp", flavor="tiny", num_classes=3)
    meta = {**META, "preprocess": {"size": [8, 8], "mean": [0.5] * 3, "std": [0.5] * 3}}
    with pytest.raises(ConfigError, match="nms"):
        export_onnx(model, tmp_path / "m.onnx", meta=meta, family="cls", options={"nms": True})


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("detnms")
    model = _detector()
    save_artifact(model, root / "det", META)
    report = export_onnx(root / "det", root / "det.onnx", trace_batch=2, verify_batch=3, options={"nms": True})
    return model, root, report


@pytest.mark.slow  # the dynamo export of the detector takes 20-30 s on these CPUs
def test_onnx_nms_graph_same_final_boxes_other_batch_sizes(exported):
    model, root, report = exported
    assert report["outputs"] == OUTPUTS and report["max_abs_diff"] <= 1e-4 and report["verify_batch"] == 3
    session = ort_session(root / "det.onnx")
    assert session.get_inputs()[0].shape[0] == "batch"
    assert "NonMaxSuppression" in {n.op_type for n in __import__("onnx").load(str(root / "det.onnx")).graph.node}
    det = json.loads(read_onnx_meta(root / "det.onnx")["r1.det"])
    assert det["nms"] is True and det["outputs"] == CONTRACT and det["max_det"] == 100
    for batch in (1, 5):
        x = torch.randn(batch, 3, 128, 128, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            ref = model(x)
        out = session.run(None, {"images": x.numpy()})
        assert out[0].shape == (batch, 100, 4) and out[2].dtype == np.int64 and out[3].shape == (batch,)
        _check_same(ref, unpad(out))


@pytest.mark.slow
def test_predictor_and_server_take_the_nms_graph(exported):
    from r1.bench.load import wait_ready
    from r1.inference.predictor import Predictor
    from r1.serve import ServeConfig, create_app
    from tests.serve.helpers import png_bytes, running_server

    _, root, _ = exported
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (90 + 10 * i, 120, 3), dtype=np.uint8)) for i in range(3)]
    a = Predictor.load(root / "det", threads=1).predict(images)
    b = Predictor.load(root / "det.onnx", threads=1).predict(images)

    def dets(records):  # records are rounded: boxes to 0.01 px, scores to 1e-4
        return [{"boxes": torch.tensor(r["boxes"]).reshape(-1, 4), "scores": torch.tensor(r["scores"]),
                 "labels": torch.tensor(r["class_ids"])} for r in records]

    assert all(len(r["labels"]) > 0 for r in a) and match_detections(dets(a), dets(b)) <= 0.02
    cfg = ServeConfig(model=str(root / "det.onnx"), runtime="onnx", max_batch=4, warmup_runs=1)
    with running_server(create_app(cfg)) as (url, _):
        wait_ready(url, timeout=60)
        r = httpx.post(url + "/v1/predict", content=png_bytes((100, 80)), headers={"content-type": "image/png"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["family"] == "det" and body["runtime"] == "onnx"
    res = body["result"]
    assert len(res["boxes"]) == len(res["scores"]) == len(res["labels"]) > 0
    assert all(0 <= x1 <= x2 <= 100 and 0 <= y1 <= y2 <= 80 for x1, y1, x2, y2 in res["boxes"])
