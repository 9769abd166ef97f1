"""Issue 30 findings 2, 3 and 10: the one dataset-path rule (r1/data/formats.py) in every reader and
writer, COCO conversion that loses no image to a name collision, and `r1 data convert`'s exit codes."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from PIL import Image

from r1.data.formats import DatasetPaths, inside_dataset
from tests.conftest import ROOT, run_cli
from tests.data.conftest import write_imagefolder, write_voc
from tests.det.test_data import coco_bundle


@pytest.fixture
def secret(tmp_path):
    """An image outside every dataset: no reader may read it, no writer link it."""
    path = tmp_path / "private" / "secret.png"
    path.parent.mkdir()
    Image.fromarray(np.full((40, 48, 3), 200, np.uint8)).save(path)
    return path


def _tree(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_the_rule(tmp_path):
    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    storage = tmp_path / "storage"
    (storage / "sub").mkdir(parents=True)
    (root / "linked").symlink_to(storage)  # a top-level folder on other storage: fine
    (root / "images" / "deep").symlink_to(tmp_path)  # a link deeper down leading out: refused
    assert inside_dataset(root, root / "images" / "a.png")
    assert inside_dataset(root, root / "images" / "x" / ".." / "a.png")
    assert inside_dataset(root, root / "linked" / "sub" / "a.png")
    assert inside_dataset(root, str(root / "images" / "a.png"))  # an absolute path inside is inside
    for bad in ("../x.png", "../../etc/passwd", "/etc/passwd", "images/../../x.png", "images/deep/x.png",
                "linked/../../x.png"):
        assert not inside_dataset(root, root / bad), bad
    rule = DatasetPaths(root)
    assert rule.file("a.png", root / "images") == root / "images" / "a.png"
    assert rule.file("/etc/passwd", root / "images") is None and rule.outside == ["/etc/passwd"]


def _escaping_voc(tmp_path, secret):
    voc = write_voc(tmp_path / "voc", [("a1", "train", [("cell", [2, 3, 20, 30])]),
                                       ("d1", "train", [("cell", [1, 1, 9, 9])]),
                                       ("e1", "train", [("cell", [1, 1, 9, 9])]),
                                       ("b1", "val", [("cell", [1, 1, 9, 9])]),
                                       ("c1", "test", [("cell", [1, 1, 9, 9])])])
    for name, target in (("d1", "../../private/secret.png"), ("e1", str(secret))):
        (voc / "JPEGImages" / f"{name}.jpg").unlink()
        xml = (voc / "Annotations" / f"{name}.xml").read_text()
        (voc / "Annotations" / f"{name}.xml").write_text(xml.replace(f"{name}.jpg", target))
    with open(voc / "ImageSets" / "Main" / "train.txt", "a") as f:
        f.write("../../../private/x\n")  # an id leading out: its annotation is never parsed
    return voc


def test_voc_paths_leading_out_are_never_read_or_linked(tmp_path, secret, caplog):
    voc = _escaping_voc(tmp_path, secret)
    proc = run_cli("data", "inspect", str(voc), "--out", str(tmp_path / "rep"))
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "rep" / "data_report.json").read_text())
    finding = next(f for f in report["findings"] if f["check"] == "paths_outside_root")
    assert finding["message"].startswith("3 file path(s) lead outside the dataset root")
    assert report["stats"]["images"] == 3 and report["stats"]["outside_root"] == 3
    for cmd in (["convert", "voc2coco", str(voc)], ["clean", str(voc)]):
        out = tmp_path / cmd[0]
        proc = run_cli("data", *cmd, "--out", str(out))
        assert proc.returncode == 0, proc.stderr
        linked = [p for p in out.rglob("*") if p.is_file() and p.stat().st_ino == secret.stat().st_ino]
        assert not linked and "secret" not in "".join(_tree(out))
    caplog.set_level(logging.WARNING)
    from r1.config import load_config
    from r1.data import build_data

    cfg = load_config(ROOT / "configs/det/bccd.yaml", [f"data.root={voc}", "data.size=64"])
    bundle = build_data(cfg.data, 0)  # training reads the same way: the outside images are skipped, counted
    assert [r.path.name for r in bundle.train.records] == ["a1.jpg"]
    assert bundle.val is not None and "lead outside the dataset root" in caplog.text


def test_coco_file_names_leading_out_are_skipped(tmp_path, secret):
    from tests.det.test_data import write_coco

    data = {"images": [{"id": 1, "file_name": "x.jpg", "width": 50, "height": 40},
                       {"id": 2, "file_name": "../private/secret.png", "width": 48, "height": 40},
                       {"id": 3, "file_name": str(secret), "width": 48, "height": 40}],
            "categories": [{"id": 1, "name": "a"}],
            "annotations": [{"id": i, "image_id": i, "category_id": 1, "bbox": [1, 1, 9, 9]} for i in (1, 2, 3)]}
    write_coco(tmp_path, {**data, "images": data["images"][:1]})
    (tmp_path / "ann.json").write_text(json.dumps(data))
    bundle = coco_bundle(tmp_path)
    assert [r.image_id for r in bundle.train.records] == [1]
    assert bundle.stats["train_images_outside_the_dataset_root_skipped"] == 2


def test_imagefolder_symlink_out_is_skipped_top_level_link_is_fine(tmp_path, secret):
    root = tmp_path / "folder"
    write_imagefolder(root, {"train": {"a": 3, "b": 3}, "val": {"a": 2, "b": 2}})
    (root / "train" / "a" / "stolen.png").symlink_to(secret)
    elsewhere = tmp_path / "other_storage"
    write_imagefolder(elsewhere, {"test": {"a": 1, "b": 1}})
    (root / "test").symlink_to(elsewhere / "test")  # the root's own top-level folder: other storage is fine
    from r1.config import load_config
    from r1.data import build_data

    cfg = load_config(ROOT / "configs/cls/digits.yaml", ["data.name=imagefolder", f"data.root={root}",
                                                         "data.img_size=16"])
    bundle = build_data(cfg.data, 0)
    assert len(bundle.train) == 6 and len(bundle.test) == 2 and bundle.stats["outside_root_images"] == 1
    proc = run_cli("data", "clean", str(root), "--out", str(tmp_path / "clean"))
    assert proc.returncode == 0, proc.stderr
    assert "stolen.png" not in "".join(_tree(tmp_path / "clean"))
    assert len(list((tmp_path / "clean" / "test").rglob("*.png"))) == 2


def test_jsonl_images_leading_out_are_skipped(tmp_path, secret):
    from r1.models.mm.data_jsonl import drop_outside, read_jsonl

    (tmp_path / "set").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "set" / "a.png")
    lines = [{"image": "a.png", "text": "q", "answer": "x"}, {"image": "../private/secret.png", "text": "q",
                                                             "answer": "x"},
             {"image": str(secret), "text": "q", "answer": "x"},
             {"image": str(tmp_path / "set" / "a.png"), "text": "q", "answer": "y"}]
    path = tmp_path / "set" / "train.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    rows, outside = drop_outside(read_jsonl(path, "train"), path)
    assert outside == 2 and [r["answer"] for r in rows] == ["x", "y"]


# ----------------------------------------------------------------------------- finding 3: name collisions
def test_coco_to_voc_keeps_both_images_of_one_name(tmp_path):
    src = tmp_path / "coco"
    for i, sub in enumerate(("a", "b")):
        (src / "images" / sub).mkdir(parents=True)
        Image.fromarray(np.full((40, 48, 3), 60 * (i + 1), np.uint8)).save(src / "images" / sub / "img.jpg")
    (src / "annotations").mkdir()
    (src / "annotations" / "instances_train.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a/img.jpg", "width": 48, "height": 40},
                   {"id": 2, "file_name": "b/img.jpg", "width": 48, "height": 40}],
        "categories": [{"id": 1, "name": "cell"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]},
                        {"id": 2, "image_id": 2, "category_id": 1, "bbox": [2, 2, 9, 9]}]}))
    out = tmp_path / "voc"
    proc = run_cli("data", "convert", "coco2voc", str(src), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "2 images" in proc.stdout and "2 images renamed (name collisions)" in proc.stdout
    assert sorted(p.name for p in (out / "JPEGImages").iterdir()) == ["a_img.jpg", "b_img.jpg"]
    assert (out / "ImageSets/Main/train.txt").read_text().split() == ["a_img", "b_img"]
    from r1.data_tools.scan import read_voc

    back = {r.path.name: r.boxes.tolist() for r in read_voc(out).records}
    assert back == {"a_img.jpg": [[1, 1, 6, 6]], "b_img.jpg": [[2, 2, 11, 11]]}
    assert (out / "JPEGImages" / "a_img.jpg").read_bytes() != (out / "JPEGImages" / "b_img.jpg").read_bytes()
    again = tmp_path / "coco2"  # and back to COCO: two images, two distinct files
    assert run_cli("data", "convert", "voc2coco", str(out), "--out", str(again)).returncode == 0
    assert len(json.loads((again / "annotations/instances_train.json").read_text())["images"]) == 2


# ----------------------------------------------------------------------------- finding 10: exit codes
def test_convert_exit_codes(tmp_path):
    voc = write_voc(tmp_path / "voc", [("a1", "train", [("cell", [2, 3, 20, 30])])])
    (voc / "JPEGImages" / "a1.jpg").write_bytes(b"not an image at all")
    proc = run_cli("data", "convert", "voc2coco", str(voc), "--out", str(tmp_path / "o1"))
    assert proc.returncode == 3 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: {voc / 'JPEGImages' / 'a1.jpg'}: not a readable image")
    proc = run_cli("data", "convert", "bogus", "a", "--out", str(tmp_path / "b"))
    assert proc.returncode == 2 and "unknown direction 'bogus'; allowed: voc2coco, coco2voc" in proc.stderr
    run = tmp_path / "run_like"
    proc = run_cli("export", str(run), "--out", "/proc/x.onnx")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == "error: --out: /proc/x.onnx is inside the system folder /proc; choose a place " \
                                  "elsewhere (e.g. under the current folder, your home folder or /tmp)"
