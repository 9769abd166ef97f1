"""`r1 predict` on a detector: JSON records, drawn PNGs (with --draw-threshold) and COCO results."""
from __future__ import annotations

import json
import warnings

import numpy as np
from PIL import Image

from r1.artifacts import save_artifact
from r1.registry import build_model
from tests.conftest import run_cli


def _detector_and_images(tmp_path):
    model = build_model("r1_det", flavor="tiny", num_classes=2, score_thresh=0.0, max_det=5)
    meta = {"classes": ["a", "b"], "num_classes": 2,
            "preprocess": {"size": [64, 64], "mean": [0.5] * 3, "std": [0.25] * 3, "letterbox": True}}
    save_artifact(model, tmp_path / "det", meta, {"name": "det_digits"})
    images = []
    for i, size in enumerate([(80, 60), (50, 90)]):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (*size, 3), dtype=np.uint8)).save(path)
        images.append(str(path))
    return tmp_path / "det", images


def test_predict_draws_and_writes_coco_json(tmp_path):
    model, images = _detector_and_images(tmp_path)
    out = tmp_path / "coco.json"
    proc = run_cli("predict", str(model), *images, "--out", str(tmp_path / "drawn"), "--coco-json", str(out),
                   "--draw-threshold", "0")
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["file"] for r in records] == images and all(len(r["boxes"]) == 5 for r in records)
    assert all((tmp_path / "drawn" / f"img{i}.png").is_file() for i in range(2))
    for i in range(2):
        assert f"img{i}.png: drew 5 box(es) scoring >= 0, 0 below" in proc.stderr
    results = json.loads(out.read_text())
    assert {r["image_id"] for r in results} == {1, 2} and {r["category_id"] for r in results} <= {1, 2}
    assert all(len(r["bbox"]) == 4 and r["bbox"][2] >= 0 for r in results)


def test_predict_reports_boxes_below_the_draw_threshold_without_warnings(tmp_path):
    """An untrained detector scores every box low: nothing drawn, said so, and no torchvision warning."""
    model, images = _detector_and_images(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        proc = run_cli("predict", str(model), images[0], "--out", str(tmp_path / "drawn"), "--draw-threshold", "1")
    assert proc.returncode == 0, proc.stderr
    assert "img0.png: drew 0 box(es) scoring >= 1, 5 below (best " in proc.stderr
    assert "a lower --draw-threshold draws them" in proc.stderr
    assert not [w for w in caught if "box" in str(w.message)], [str(w.message) for w in caught]
    assert (tmp_path / "drawn" / "img0.png").is_file()
    bad = run_cli("predict", str(model), images[0], "--draw-threshold", "1.5")
    assert bad.returncode == 2 and "--draw-threshold" in bad.stderr
