"""`r1 data convert`: VOC -> COCO -> VOC keeps every box (zero-area ones dropped and counted), and the
`coco` data kind reads the converted folder with data.root alone, giving the VOC kind's records."""
from __future__ import annotations

import json

import numpy as np
import pytest

from r1.config import load_config
from r1.data import build_data
from r1.data_tools.scan import read_voc
from tests.conftest import ROOT, run_cli
from tests.data.conftest import write_voc

IMAGES = [("a1", "train", [("cell", [2, 3, 20, 30]), ("dot", [10, 10, 16, 18])]),
          ("a2", "train", [("cell", [5, 5, 5, 25]), ("cell", [0, 0, 47, 39])]),  # first box has zero width
          ("b1", "val", [("dot", [1.5, 2.5, 9, 9])]),
          ("c1", "test", [("cell", [30, 4, 44, 36]), ("dot", [8, 8, 12, 12])])]


@pytest.fixture
def voc(tmp_path):
    return write_voc(tmp_path / "voc", IMAGES)


def _records(kind: str, root, split: str = "test"):
    cfg = load_config(ROOT / "configs/det/bccd.yaml", [f"data.name={kind}", f"data.root={root}"])
    ds = getattr(build_data(cfg.data), split)
    return [(r.path.name, r.boxes.tolist(), r.labels.tolist()) for r in ds.records]


def test_voc_to_coco_to_voc_round_trip(voc, tmp_path):
    coco, back = tmp_path / "coco", tmp_path / "back"
    res = run_cli("data", "convert", "voc2coco", str(voc), "--out", str(coco))
    assert res.returncode == 0, res.stderr
    assert "4 images" in res.stdout and "6 boxes" in res.stdout and "1 zero-area boxes dropped" in res.stdout
    train = json.loads((coco / "annotations" / "instances_train.json").read_text())
    assert [c["name"] for c in train["categories"]] == ["cell", "dot"]
    assert [a["bbox"] for a in train["annotations"]] == [[2, 3, 18, 27], [10, 10, 6, 8], [0, 0, 47, 39]]
    assert {k: v for k, v in train["images"][0].items() if k != "id"} == {"file_name": "a1.jpg", "width": 48,
                                                                           "height": 40}
    assert sorted(p.name for p in (coco / "images").iterdir()) == ["a1.jpg", "a2.jpg", "b1.jpg", "c1.jpg"]

    res = run_cli("data", "convert", "coco2voc", str(coco), "--out", str(back))
    assert res.returncode == 0, res.stderr
    src, out = read_voc(voc), read_voc(back)
    key = lambda s: {(r.split, r.path.name): (r.boxes[(r.boxes[:, 2:] > r.boxes[:, :2]).all(1)].tolist(),  # noqa: E731
                                              [n for n, b in zip(r.box_labels, r.boxes) if (b[2:] > b[:2]).all()])
                     for r in s.records}
    assert key(src) == key(out)


def test_coco_kind_reads_converted_folder_like_voc(voc, tmp_path):
    coco = tmp_path / "coco"
    assert run_cli("data", "convert", "voc2coco", str(voc), "--out", str(coco)).returncode == 0
    for split in ("train", "val", "test"):
        a, b = _records("voc", voc, split), _records("coco", coco, split)
        assert [x[0] for x in a] == [x[0] for x in b]
        for (_, boxes_a, labels_a), (_, boxes_b, labels_b) in zip(a, b):
            np.testing.assert_allclose(boxes_a, boxes_b, atol=1e-4)
            assert labels_a == labels_b


def test_convert_errors(voc, tmp_path):
    res = run_cli("data", "convert", "voc2yolo", str(voc), "--out", str(tmp_path / "x"))
    assert res.returncode == 2 and "unknown direction 'voc2yolo'; allowed: voc2coco, coco2voc" in res.stderr
    res = run_cli("data", "convert", "coco2voc", str(voc), "--out", str(tmp_path / "x"))
    assert res.returncode == 3 and "not a COCO dataset" in res.stderr
    res = run_cli("data", "convert", "voc2coco", str(voc), "--out", str(voc / "inside"))
    assert res.returncode == 2 and "is the source folder or inside it; choose a new folder outside" in res.stderr
