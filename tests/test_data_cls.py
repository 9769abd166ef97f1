"""Classification data: the embedded digits, ImageFolder, and bad input."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from r1.config import load_config
from r1.data import build_data
from r1.errors import DataError
from tests.conftest import ROOT, run_cli, run_r1, tiny_cls_overrides


def test_digits_split_is_fixed_and_disjoint():
    cfg = load_config(ROOT / "configs/cls/digits.yaml").data
    a, b = build_data(cfg, seed=0), build_data(cfg, seed=123)  # run.seed does not move the split
    assert (len(a.train), len(a.val), len(a.test)) == (1257, 270, 270)
    assert (a.test.images == b.test.images).all()
    x, y = a.val[0]
    assert x.shape == (3, 32, 32) and x.dtype.is_floating_point and 0 <= int(y) < 10
    assert a.meta["num_classes"] == 10 and a.meta["preprocess"]["size"] == [32, 32]


def _image_folder(root, per_class=6, size=20):
    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            arr = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / c / f"{i}.png")
    return root


def test_imagefolder_classes_and_splits(tmp_path):
    root = _image_folder(tmp_path / "imgs")
    cfg = load_config(None, ["data.name=imagefolder", f"data.root={root}", "data.img_size=16",
                             "data.val_frac=0.25", "data.test_frac=0.25"]).data
    b = build_data(cfg)
    assert b.meta["classes"] == ["cat", "dog"]
    assert (len(b.train), len(b.val), len(b.test)) == (6, 3, 3)
    assert b.train[0][0].shape == (3, 16, 16)


def test_corrupt_image_is_skipped_counted_and_reported(tmp_path):
    root = _image_folder(tmp_path / "imgs", per_class=12)
    (root / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    over = ["data.name=imagefolder", f"data.root={root}", "data.img_size=16", "model.in_features=768",
            "model.name=mlp", "model.flavor=tiny", "data.batch_size=4"]
    proc = run_r1("train", "configs/cls/digits.yaml", *tiny_cls_overrides(tmp_path / "run"), *over, "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "skipped 1 unreadable image(s)" in proc.stderr and "broken.png" in proc.stderr
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["data/skipped_images"] == 1


def test_empty_and_missing_dataset_errors(tmp_path):
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    cfg = load_config(None, ["data.name=imagefolder", f"data.root={tmp_path / 'empty'}"]).data
    with pytest.raises(DataError, match="empty dataset"):
        build_data(cfg)
    proc = run_cli("train", "configs/cls/digits.yaml", "data.name=imagefolder", f"data.root={tmp_path / 'empty'}",
                  f"run.dir={tmp_path / 'r'}")
    assert proc.returncode == 3 and proc.stderr.strip().startswith("error: ") and "empty dataset" in proc.stderr
    cfg = load_config(None, ["data.name=imagefolder", f"data.root={tmp_path / 'nope'}"]).data
    with pytest.raises(DataError, match="directory not found"):
        build_data(cfg)
