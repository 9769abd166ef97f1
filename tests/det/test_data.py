"""Detection datasets: VOC and COCO parsing, bad files, digit scenes."""
import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from r1.config import load_config
from r1.data import build_data
from r1.errors import DataError

VOC_OBJ = ("<object><name>{name}</name><difficult>0</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
           "<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>")


def write_voc(root, anns: dict, splits: dict, bad_images=()):
    for d in ("Annotations", "ImageSets/Main", "JPEGImages"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for name, objs in anns.items():
        xml = objs if isinstance(objs, str) else (
            "<annotation><size><width>64</width><height>48</height></size>"
            + "".join(VOC_OBJ.format(name=n, b=b) for n, b in objs) + "</annotation>")
        (root / "Annotations" / f"{name}.xml").write_text(xml)
        path = root / "JPEGImages" / f"{name}.jpg"
        if name in bad_images:
            path.write_bytes(b"not a jpeg")
        else:
            Image.fromarray(np.full((48, 64, 3), 120, np.uint8)).save(path)
    for split, names in splits.items():
        (root / "ImageSets/Main" / f"{split}.txt").write_text("\n".join(names) + "\n")


def voc_bundle(root, *overrides):
    cfg = load_config(None, ["data.name=voc", f"data.root={root}", "data.size=64", *overrides])
    return build_data(cfg.data, 0)


def test_voc_classes_sorted_degenerate_empty_and_unreadable_counted(tmp_path, caplog):
    anns = {"a": [("dog", (1, 2, 30, 40)), ("cat", (5, 5, 5, 20))],  # second box has zero width
            "b": [("cat", (10, 10, 50, 40))], "c": [], "d": [("bird", (0, 0, 10, 10))]}
    write_voc(tmp_path, anns, {"train": ["a", "b", "c", "d"], "val": ["b"], "test": ["a"]}, bad_images=("d",))
    with caplog.at_level(logging.INFO):
        b = voc_bundle(tmp_path)
    assert b.meta["classes"] == ["bird", "cat", "dog"] and b.meta["num_classes"] == 3
    assert b.meta["preprocess"] == {"size": [64, 64], "mean": [0.485, 0.456, 0.406],
                                    "std": [0.229, 0.224, 0.225], "letterbox": True}
    assert len(b.train) == 3  # d is unreadable and skipped
    log = caplog.text
    assert "1 degenerate boxes dropped" in log and "1 unreadable images" in log and "1 images without boxes" in log
    x, t = b.collate([b.train[i] for i in range(3)])
    assert x.shape == (3, 3, 64, 64)
    assert t[0]["labels"].tolist() == [2] and t[1]["labels"].tolist() == [1] and t[2]["boxes"].shape == (0, 4)
    _, tv = b.test[0]
    assert torch.equal(tv["gt_boxes"], torch.tensor([[1.0, 2, 30, 40]])) and tv["orig_size"].tolist() == [48, 64]


def test_voc_configured_classes_and_image_unreadable_at_load_time(tmp_path):
    write_voc(tmp_path, {"a": [("dog", (1, 2, 30, 40)), ("cat", (5, 5, 25, 20))]}, {"train": ["a"], "val": ["a"],
                                                                                    "test": ["a"]})
    b = voc_bundle(tmp_path, "data.classes=[dog]")
    assert b.meta["classes"] == ["dog"] and b.train[0][1]["labels"].tolist() == [0]
    (tmp_path / "JPEGImages" / "a.jpg").write_bytes(b"broken after the dataset was built")
    assert b.train[0] is None and b.collate([b.train[0]]) is None  # skipped, never a crash mid-epoch


@pytest.mark.parametrize("xml", [
    "<annotation><object><name>dog</name>",  # truncated
    "<annotation><object><name>dog</name><bndbox><xmin>1</xmin></bndbox></object></annotation>",  # no ymin...
    "<annotation><object><name>dog</name><bndbox><xmin>a</xmin><ymin>1</ymin><xmax>2</xmax><ymax>3</ymax>"
    "</bndbox></object></annotation>",
])
def test_malformed_voc_annotation_names_the_file(tmp_path, xml):
    write_voc(tmp_path, {"good": [("dog", (1, 1, 9, 9))], "bad_one": xml}, {"train": ["good", "bad_one"],
                                                                            "val": ["good"], "test": []})
    with pytest.raises(DataError, match=r"bad_one\.xml.*malformed"):
        voc_bundle(tmp_path, "data.test_split=")


def test_voc_missing_split_file_and_root(tmp_path):
    write_voc(tmp_path, {"a": [("dog", (1, 1, 9, 9))]}, {"train": ["a"]})
    with pytest.raises(DataError, match=r"val\.txt"):
        voc_bundle(tmp_path)
    with pytest.raises(DataError, match="data.root"):
        voc_bundle(tmp_path / "nowhere")


def write_coco(root, data, name="ann.json"):
    (root / "img").mkdir(exist_ok=True)
    for im in data.get("images", []) if isinstance(data, dict) else []:
        Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(root / "img" / im["file_name"])
    path = root / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


COCO_OK = {"images": [{"id": 7, "file_name": "x.jpg", "width": 50, "height": 40},
                      {"id": 9, "file_name": "y.jpg", "width": 50, "height": 40}],
           "categories": [{"id": 5, "name": "zebra"}, {"id": 2, "name": "ant"}],
           "annotations": [{"id": 1, "image_id": 7, "category_id": 5, "bbox": [1, 2, 10, 20], "iscrowd": 0},
                           {"id": 2, "image_id": 7, "category_id": 2, "bbox": [5, 5, 0, 3], "iscrowd": 0},
                           {"id": 3, "image_id": 9, "category_id": 2, "bbox": [0, 0, 30, 30], "iscrowd": 1}]}


def coco_bundle(root, *overrides):
    cfg = load_config(None, ["data.name=coco", f"data.root={root}", "data.train_images=img",
                             "data.train_ann=ann.json", "data.val_images=img", "data.val_ann=ann.json",
                             "data.size=64", *overrides])
    return build_data(cfg.data, 0)


def test_coco_categories_by_id_crowd_and_degenerate(tmp_path, caplog):
    write_coco(tmp_path, COCO_OK)
    with caplog.at_level(logging.INFO):
        b = coco_bundle(tmp_path)
    assert b.meta["classes"] == ["ant", "zebra"] and b.meta["category_ids"] == [2, 5]
    assert b.test is None and len(b.train) == 2
    _, t = b.val[0]
    assert t["image_id"] == 7 and t["gt_labels"].tolist() == [1]
    assert torch.equal(t["gt_boxes"], torch.tensor([[1.0, 2, 11, 22]]))
    assert "1 crowd boxes ignored" in caplog.text and "1 degenerate boxes dropped" in caplog.text


@pytest.mark.parametrize("content", [
    "{not json",
    json.dumps({"annotations": []}),  # no images / categories
    json.dumps({**COCO_OK, "annotations": [{"id": 1, "image_id": 7, "category_id": 5, "bbox": [1, 2, 3]}]}),
    json.dumps({**COCO_OK, "images": [{"id": 7}]}),  # no file_name
])
def test_malformed_coco_names_the_file(tmp_path, content):
    write_coco(tmp_path, content)
    with pytest.raises(DataError, match=r"ann\.json.*malformed"):
        coco_bundle(tmp_path)


def test_coco_missing_annotation_file(tmp_path):
    with pytest.raises(DataError, match=r"ann\.json.*not found"):
        coco_bundle(tmp_path)


def digits_bundle(*overrides):
    cfg = load_config(None, ["data.name=det_digits", "data.num_train=8", "data.num_val=4", "data.num_test=4",
                             *overrides])
    return build_data(cfg.data, 0)


def test_digit_scenes_are_deterministic_with_exact_boxes():
    a, b = digits_bundle(), digits_bundle()
    assert a.meta["classes"] == [str(i) for i in range(10)] and a.meta["num_classes"] == 10
    for i in range(4):
        ia, ta = a.test[i]
        ib, tb = b.test[i]
        assert torch.equal(ia, ib) and torch.equal(ta["gt_boxes"], tb["gt_boxes"])
    img = a.test.load(0).float()
    background = img.mean()
    for box in a.test.records[0].boxes.astype(int):
        x1, y1, x2, y2 = box
        inside = img[:, y1:y2, x1:x2]
        assert inside.amax() > background + 60  # ink in the box
    other = digits_bundle("data.split_seed=1")
    assert not torch.equal(other.test[0][0], a.test[0][0])


def test_digit_scenes_resize_to_the_network_size():
    b = digits_bundle("data.size=96")
    x, t = b.collate([b.val[i] for i in range(2)])
    assert x.shape == (2, 3, 96, 96)
    assert torch.allclose(t[0]["boxes"], t[0]["gt_boxes"] * 0.75, atol=1e-4)


def test_voc_image_named_by_the_xml_filename(tmp_path):
    write_voc(tmp_path, {"a": [("dog", (1, 2, 30, 40))]}, {"train": ["a"], "val": ["a"], "test": ["a"]})
    (tmp_path / "JPEGImages" / "a.jpg").rename(tmp_path / "JPEGImages" / "a.png")
    xml = (tmp_path / "Annotations" / "a.xml").read_text()
    named = xml.replace("<annotation>", "<annotation><filename>a.png</filename>")
    (tmp_path / "Annotations" / "a.xml").write_text(named)
    b = voc_bundle(tmp_path)
    assert b.train.records[0].path.name == "a.png" and b.train[0] is not None
