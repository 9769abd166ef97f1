"""Issue 17 items 7 and 12: data that cannot be decoded stops training (exit 3), and data that would
train on nothing is an error or a loud warning with counts in metrics.json (`data/*`)."""
from __future__ import annotations

import copy
import io
import json
import logging

import numpy as np
import pytest
from PIL import Image

from r1.config import load_config
from r1.data import build_data
from r1.data.unreadable import UNREADABLE, DecodeGuard
from r1.errors import DataError
from tests.conftest import ROOT, run_cli
from tests.det.test_data import COCO_OK, coco_bundle, write_coco


def _truncated_jpeg(path, rng) -> None:
    """A JPEG whose header (and PIL's verify()) is fine but whose data stops early: fails on decode."""
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(buf, "JPEG")
    path.write_bytes(buf.getvalue()[:-200])


def test_imagefolder_of_truncated_jpegs_stops_with_exit_3_and_logs_each_file_once(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (tmp_path / "data" / cls).mkdir(parents=True)
        for i in range(8):
            _truncated_jpeg(tmp_path / "data" / cls / f"{i}.jpg", rng)
    run = tmp_path / "run"
    proc = run_cli("train", str(ROOT / "configs/cls/digits.yaml"), "data.name=imagefolder",
                   f"data.root={tmp_path / 'data'}", "data.img_size=16", "data.batch_size=4", f"run.dir={run}",
                   "run.threads=1", "train.max_steps=50", "--no-progress")
    assert proc.returncode == 3, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: data.name=imagefolder (data.root={tmp_path / 'data'}): ")
    assert "had no decodable sample" in line and "image file is truncated" in line
    log = (run / "log.txt").read_text()
    skipped = [ln for ln in log.splitlines() if "skipped unreadable file" in ln]
    assert skipped and len(skipped) == len({ln.split("skipped unreadable file ")[1].split()[0] for ln in skipped})


def test_decode_guard_counts_and_stops():
    guard = DecodeGuard(per_epoch=10, max_fraction=0.5, dataset="data.name=x")
    assert guard.passes(("x", 1), epoch=0)
    for _ in range(5):  # 5 of 10 empty batches: allowed
        assert not guard.passes(None, epoch=0)
    assert guard.metrics()["data/undecodable_batches"] == 5
    with pytest.raises(DataError, match=r"data.name=x: 6 of the 10 training batches of epoch 1 had no decodable"):
        guard.passes(None, epoch=0)
    always = DecodeGuard(per_epoch=4, max_fraction=1.0, dataset="data.name=x")  # the fraction never stops it
    for _ in range(3):
        always.passes(None, epoch=0)
    with pytest.raises(DataError, match="4 training batches in a row"):
        always.passes(None, epoch=1)


def test_unreadable_files_are_logged_once_each(caplog):
    UNREADABLE.reset()
    with caplog.at_level(logging.WARNING, logger="r1.data"):
        for _ in range(50):
            UNREADABLE.note("/x/broken.jpg", "image file is truncated")
        UNREADABLE.note("/x/other.jpg", "cannot identify image file")
    assert len(caplog.records) == 2 and "2 unreadable file(s) so far" in caplog.records[-1].message
    UNREADABLE.reset()


def test_training_reports_data_counts_in_metrics(trained_digits):
    metrics = json.loads((trained_digits / "metrics.json").read_text())
    assert metrics["data/undecodable_batches"] == 0 and metrics["data/unreadable_files"] == 0


# ----------------------------------------------------------------------------- COCO
def _coco_with(tmp_path, **change):
    data = copy.deepcopy(COCO_OK)
    data.update(change)
    write_coco(tmp_path, data)
    return coco_bundle


def test_coco_where_every_box_is_degenerate_is_an_error_with_counts(tmp_path):
    anns = [{**a, "bbox": [3, 3, 0, 5]} for a in COCO_OK["annotations"]]
    _coco_with(tmp_path, annotations=anns)
    with pytest.raises(DataError, match=r"ann\.json: no usable boxes in the train split, nothing to learn "
                                        r"\(1 crowd boxes ignored, 2 degenerate boxes dropped"):
        coco_bundle(tmp_path)


def test_coco_string_category_id_and_missing_categories_are_named(tmp_path):
    anns = [{**a, "category_id": str(a["category_id"])} for a in COCO_OK["annotations"]]
    _coco_with(tmp_path, annotations=anns)
    with pytest.raises(DataError, match=r"annotations\[0\]\.category_id must be an integer, got '5'"):
        coco_bundle(tmp_path)
    write_coco(tmp_path, {k: v for k, v in COCO_OK.items() if k != "categories"})
    with pytest.raises(DataError, match="no 'categories' list"):
        coco_bundle(tmp_path)
    _coco_with(tmp_path, categories=[])
    with pytest.raises(DataError, match="'categories' is empty"):
        coco_bundle(tmp_path)


def test_coco_dropped_boxes_are_a_warning_and_data_stats(tmp_path, caplog):
    write_coco(tmp_path, COCO_OK)
    with caplog.at_level(logging.WARNING):
        bundle = coco_bundle(tmp_path)
    assert "coco train: 1 of 2 boxes dropped (1 degenerate boxes dropped)" in caplog.text
    assert bundle.stats["train_degenerate_boxes_dropped"] == 1 and bundle.stats["train_boxes"] == 1


# ----------------------------------------------------------------------------- ImageFolder
def test_imagefolder_empty_class_or_only_zero_byte_files_is_an_error(tmp_path):
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(6):
            Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / cls / f"{i}.png")
    (tmp_path / "empty").mkdir()
    (tmp_path / "zero").mkdir()
    for i in range(3):
        (tmp_path / "zero" / f"{i}.jpg").write_bytes(b"")
    cfg = load_config(None, ["data.name=imagefolder", f"data.root={tmp_path}"])
    with pytest.raises(DataError, match=r"class\(es\) without readable images: 'empty', 'zero' \(3 unreadable "
                                        r"file\(s\) skipped\); .* \(2 of 4 classes have images\)"):
        build_data(cfg.data)


# ----------------------------------------------------------------------------- text
def test_random_bytes_as_lm_text_is_exit_3(tmp_path):
    noise = tmp_path / "noise.txt"
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 200_000, dtype=np.uint8).tobytes())
    proc = run_cli("train", str(ROOT / "configs/lm/shakespeare-char.yaml"), f"data.path={noise}",
                   f"data.cache_dir={tmp_path / 'cache'}", f"run.dir={tmp_path / 'run'}", "run.threads=1",
                   "--no-progress")
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(
        f"error: {noise}: not text: 55% of its first ")


def test_coco_image_truncated_after_its_header_is_skipped_and_noted_once(tmp_path):
    write_coco(tmp_path, COCO_OK)
    bundle = coco_bundle(tmp_path)
    _truncated_jpeg(tmp_path / "img" / "x.jpg", np.random.default_rng(0))  # the header still reads
    UNREADABLE.reset()
    assert bundle.train[0] is None and bundle.train[0] is None
    assert list(UNREADABLE.errors) == [str(tmp_path / "img" / "x.jpg")]
    assert bundle.collate([bundle.train[0]]) is None
    UNREADABLE.reset()
