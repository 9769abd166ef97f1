"""`r1 predict` on a detector: JSON records, drawn PNGs and COCO results."""
from __future__ import annotations

import json

import numpy as np
from PIL import Image

from r1.artifacts import save_artifact
from r1.registry import build_model
from tests.conftest import run_r1


def test_predict_draws_and_writes_coco_json(tmp_path):
    model = build_model("r1_det", flavor="tiny", num_classes=2, score_thresh=0.0, max_det=5)
    meta = {"classes": ["a", "b"], "num_classes": 2,
            "preprocess": {"size": [64, 64], "mean": [0.5] * 3, "std": [0.25] * 3, "letterbox": True}}
    save_artifact(model, tmp_path / "det", meta, {"name": "det_digits"})
    images = []
    for i, size in enumerate([(80, 60), (50, 90)]):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (*size, 3), dtype=np.uint8)).save(path)
        images.append(str(path))
    out = tmp_path / "coco.json"
    proc = run_r1("predict", str(tmp_path / "det"), *images, "--out", str(tmp_path / "drawn"), "--coco-json", str(out))
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["file"] for r in records] == images and all(len(r["boxes"]) == 5 for r in records)
    assert all((tmp_path / "drawn" / f"img{i}.png").is_file() for i in range(2))
    results = json.loads(out.read_text())
    assert {r["image_id"] for r in results} == {1, 2} and {r["category_id"] for r in results} <= {1, 2}
    assert all(len(r["bbox"]) == 4 and r["bbox"][2] >= 0 for r in results)
