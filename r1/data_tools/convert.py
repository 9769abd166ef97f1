"""`r1 data convert voc2coco|coco2voc`: the two detection layouts R1 reads, either way.

voc2coco writes OUT/annotations/instances_<split>.json and OUT/images/ (the layout the `coco`
data kind reads with data.root=OUT); coco2voc writes OUT/Annotations/, OUT/ImageSets/Main/ and
OUT/JPEGImages/. Boxes of zero (or negative) area are dropped and counted; coordinates are kept
as the source has them (VOC xmin..xmax <-> COCO x, y, w = xmax - xmin, h = ymax - ymin).
"""
from __future__ import annotations

import json
import os
import shutil
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import numpy as np

from r1.data_tools.scan import ImageRecord, read_coco, read_voc
from r1.data_tools.source import detect
from r1.errors import DataError

DIRECTIONS = ("voc2coco", "coco2voc")


def place(src: Path, dst: Path) -> None:
    """Hard link when the file system allows (no copy of the bytes), else copy."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _image_size(rec: ImageRecord) -> tuple[int, int]:
    from PIL import Image
    with Image.open(rec.path) as im:
        return im.width, im.height


def write_coco(records: list[ImageRecord], classes: list[str], out: Path) -> Counter:
    """records (det, any split) -> out/annotations/instances_<split>.json + out/images/."""
    counts = Counter()
    cat_id = {c: i + 1 for i, c in enumerate(classes)}
    categories = [{"id": i, "name": c, "supercategory": "none"} for c, i in cat_id.items()]
    splits: dict[str, dict] = {}
    ann_id = 0
    names: dict[str, Path] = {}
    for n, rec in enumerate(records, 1):
        if rec.path is None or not rec.path.is_file():
            counts["images missing (skipped)"] += 1
            continue
        if names.setdefault(rec.path.name, rec.path) != rec.path:
            raise DataError(f"{rec.path}: two images are named {rec.path.name}; images/ needs unique file names")
        w, h = (rec.width, rec.height) if rec.width else _image_size(rec)
        split = splits.setdefault(rec.split, {"images": [], "annotations": [], "categories": categories})
        image_id = int(rec.meta["id"]) if isinstance(rec.meta.get("id"), int) else n
        split["images"].append({"id": image_id, "file_name": rec.path.name, "width": w, "height": h})
        place(rec.path, out / "images" / rec.path.name)
        counts["images"] += 1
        for (x1, y1, x2, y2), name in zip(rec.boxes.tolist(), rec.box_labels):
            bw, bh = x2 - x1, y2 - y1
            if bw <= 0 or bh <= 0:
                counts["zero-area boxes dropped"] += 1
                continue
            ann_id += 1
            split["annotations"].append({"id": ann_id, "image_id": image_id, "category_id": cat_id[name],
                                         "bbox": [x1, y1, bw, bh], "area": bw * bh, "iscrowd": 0})
            counts["boxes"] += 1
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    for split, body in splits.items():
        (out / "annotations" / f"instances_{split}.json").write_text(json.dumps(body))
    return counts


def _voc_xml(rec: ImageRecord, w: int, h: int, keep: np.ndarray) -> str:
    root = ET.Element("annotation")
    ET.SubElement(root, "filename").text = rec.path.name
    size = ET.SubElement(root, "size")
    for k, v in (("width", w), ("height", h), ("depth", 3)):
        ET.SubElement(size, k).text = str(v)
    difficult = rec.meta.get("difficult") or [False] * len(rec.box_labels)
    for (x1, y1, x2, y2), name, hard, ok in zip(rec.boxes.tolist(), rec.box_labels, difficult, keep):
        if not ok:
            continue
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = name
        ET.SubElement(obj, "difficult").text = "1" if hard else "0"
        bb = ET.SubElement(obj, "bndbox")
        for k, v in zip(("xmin", "ymin", "xmax", "ymax"), (x1, y1, x2, y2)):
            ET.SubElement(bb, k).text = f"{v:g}"
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


def write_voc(records: list[ImageRecord], out: Path) -> Counter:
    """records -> out/Annotations/<stem>.xml, out/JPEGImages/<file>, out/ImageSets/Main/<split>.txt."""
    counts, ids = Counter(), {}
    for rec in records:
        if rec.path is None or not rec.path.is_file():
            counts["images missing (skipped)"] += 1
            continue
        stem = rec.path.stem
        w, h = (rec.width, rec.height) if rec.width else _image_size(rec)
        wh = rec.boxes[:, 2:] - rec.boxes[:, :2]
        keep = (wh > 0).all(1)
        counts["zero-area boxes dropped"] += int((~keep).sum())
        counts["boxes"] += int(keep.sum())
        counts["images"] += 1
        (out / "Annotations").mkdir(parents=True, exist_ok=True)
        (out / "Annotations" / f"{stem}.xml").write_text(_voc_xml(rec, w, h, keep))
        place(rec.path, out / "JPEGImages" / rec.path.name)
        ids.setdefault(rec.split, []).append(stem)
    (out / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    for split, names in ids.items():
        (out / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(names) + "\n")
    return counts


def convert(direction: str, root: Path, out: Path) -> Counter:
    """Convert `root` into `out` (which must not be inside `root`); returns the counts."""
    if direction not in DIRECTIONS:
        raise DataError(f"convert: unknown direction {direction!r}; allowed: {', '.join(DIRECTIONS)}")
    want = "voc" if direction == "voc2coco" else "coco"
    if detect(root) != want:
        raise DataError(f"{root}: not a {want.upper()} dataset (needs "
                        + ("Annotations/ and ImageSets/Main/)" if want == "voc" else "annotations/instances_<split>.json)"))
    if out.resolve() == root.resolve() or root.resolve() in out.resolve().parents:
        raise DataError(f"--out {out}: must not be the source folder or inside it")
    images = read_voc(root) if want == "voc" else read_coco(root)
    return write_coco(images.records, images.classes, out) if want == "voc" else write_voc(images.records, out)
