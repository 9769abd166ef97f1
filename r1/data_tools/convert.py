"""`r1 data convert voc2coco|coco2voc`: the two detection layouts R1 reads, either way.

voc2coco writes OUT/annotations/instances_<split>.json and OUT/images/ (the layout the `coco`
data kind reads with data.root=OUT); coco2voc writes OUT/Annotations/, OUT/ImageSets/Main/ and
OUT/JPEGImages/. Boxes of zero (or negative) area are dropped and counted; coordinates are kept
as the source has them (VOC xmin..xmax <-> COCO x, y, w = xmax - xmin, h = ymax - ymin).

Output files are named after their source files; where two source files share a name (COCO's
`a/img.jpg` and `b/img.jpg`), each gets its folders in its name (`a_img.jpg`, `b_img.jpg`), counted
as renamed: nothing is lost or merged. Image paths leading outside the source dataset are skipped by
its reader (the dataset-path rule, r1/data/formats.py) and never linked. OUT must be a new or empty
folder (r1/outputs.py).
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
from r1.errors import ConfigError, DataError
from r1.outputs import output_folder

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
    try:
        with Image.open(rec.path) as im:
            return im.width, im.height
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise DataError(f"{rec.path}: not a readable image ({type(err).__name__}: {err}"[:200] + "); remove it "
                        "from the dataset or fix it (`r1 data clean` drops unreadable images)") from None


def output_names(records: list[ImageRecord], key=lambda name: name) -> dict[Path, str]:
    """source path -> its output file name, unique under `key` (e.g. the stem, for VOC's <stem>.xml):
    its own name, or, for source files sharing one (a/img.jpg, b/img.jpg), the name with as many of its
    folders as make it unique (a_img.jpg, b_img.jpg)."""
    paths = list(dict.fromkeys(r.path for r in records if r.path is not None))
    groups: dict[str, list[Path]] = {}
    for p in paths:
        groups.setdefault(key(p.name), []).append(p)
    names = {p: p.name for p in paths if len(groups[key(p.name)]) == 1}
    taken = {key(n) for n in names.values()}
    for p in paths:
        if p in names:
            continue
        for depth in range(2, len(p.parts) + 1):
            name = "_".join(p.parts[-depth:]).lstrip("_/") or p.name
            if key(name) not in taken:
                break
        else:
            n = 2
            while key(name := f"{p.stem}-{n}{p.suffix}") in taken:
                n += 1
        names[p] = name
        taken.add(key(name))
    return names


def write_coco(records: list[ImageRecord], classes: list[str], out: Path) -> Counter:
    """records (det, any split) -> out/annotations/instances_<split>.json + out/images/."""
    counts = Counter()
    cat_id = {c: i + 1 for i, c in enumerate(classes)}
    categories = [{"id": i, "name": c, "supercategory": "none"} for c, i in cat_id.items()]
    splits: dict[str, dict] = {}
    ann_id = 0
    names = output_names(records)
    counts["images renamed (name collisions)"] += sum(p.name != n for p, n in names.items())
    for n, rec in enumerate(records, 1):
        if rec.path is None or not rec.path.is_file():
            counts["images missing (skipped)"] += 1
            continue
        w, h = (rec.width, rec.height) if rec.width else _image_size(rec)
        split = splits.setdefault(rec.split, {"images": [], "annotations": [], "categories": categories})
        image_id = int(rec.meta["id"]) if isinstance(rec.meta.get("id"), int) else n
        split["images"].append({"id": image_id, "file_name": names[rec.path], "width": w, "height": h})
        place(rec.path, out / "images" / names[rec.path])
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


def _voc_xml(rec: ImageRecord, name: str, w: int, h: int, keep: np.ndarray) -> str:
    root = ET.Element("annotation")
    ET.SubElement(root, "filename").text = name
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
    names = output_names(records, key=lambda name: Path(name).stem)  # <stem>.xml and split ids are unique too
    counts["images renamed (name collisions)"] += sum(p.name != n for p, n in names.items())
    for rec in records:
        if rec.path is None or not rec.path.is_file():
            counts["images missing (skipped)"] += 1
            continue
        name = names[rec.path]
        stem = Path(name).stem
        w, h = (rec.width, rec.height) if rec.width else _image_size(rec)
        wh = rec.boxes[:, 2:] - rec.boxes[:, :2]
        keep = (wh > 0).all(1)
        counts["zero-area boxes dropped"] += int((~keep).sum())
        counts["boxes"] += int(keep.sum())
        counts["images"] += 1
        (out / "Annotations").mkdir(parents=True, exist_ok=True)
        (out / "Annotations" / f"{stem}.xml").write_text(_voc_xml(rec, name, w, h, keep))
        place(rec.path, out / "JPEGImages" / name)
        ids.setdefault(rec.split, {})[stem] = None
    (out / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    for split, stems in ids.items():
        (out / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(stems) + "\n")
    return counts


def convert(direction: str, root: Path, out: Path) -> Counter:
    """Convert `root` into `out` (a new or empty folder, not inside `root`); returns the counts."""
    if direction not in DIRECTIONS:
        raise ConfigError(f"convert: unknown direction {direction!r}; allowed: {', '.join(DIRECTIONS)}")
    want = "voc" if direction == "voc2coco" else "coco"
    if detect(root) != want:
        raise DataError(f"{root}: not a {want.upper()} dataset (needs "
                        + ("Annotations/ and ImageSets/Main/)" if want == "voc" else "annotations/instances_<split>.json)"))
    if out.resolve() == root.resolve() or root.resolve() in out.resolve().parents:
        raise ConfigError(f"--out: {out} is the source folder or inside it; choose a new folder outside the source")
    images = read_voc(root) if want == "voc" else read_coco(root)
    counts = Counter({"paths outside the dataset skipped": len(images.outside)} if images.outside else {})
    output_folder(out, "--out", "convert", fresh=True)
    write = write_coco(images.records, images.classes, out) if want == "voc" else write_voc(images.records, out)
    return +(counts + write)
