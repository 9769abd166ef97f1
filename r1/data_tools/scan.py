"""Read every image of a source once: size, channels, readability, content and perceptual hashes.

A record is one image with its split, its class (classification) or its boxes (detection, in
original pixels, x1y1x2y2). Nothing is written; the source is never modified.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from r1.data.imagehash import dhash, thumbnail
from r1.data_tools.source import IMAGE_EXTS, Source
from r1.errors import DataError

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")


@dataclass
class ImageRecord:
    split: str
    path: Path | None = None           # None for in-memory images (digits)
    label: str | None = None           # classification: the class folder
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    box_labels: list[str] = field(default_factory=list)
    array: np.ndarray | None = None    # (H, W) or (H, W, C) uint8, in-memory images only
    width: int = 0
    height: int = 0
    channels: int = 0
    error: str = ""                    # why the image cannot be read ("" when it can)
    sha1: str = ""
    hash: bytes = b""
    thumb: np.ndarray | None = None    # grey thumbnail confirming near-duplicates (r1.data.imagehash.thumbnail)
    meta: dict = field(default_factory=dict)  # format-specific (COCO image id, VOC annotation path)

    @property
    def name(self) -> str:
        return str(self.path) if self.path is not None else f"{self.split}#{self.meta.get('index')}"


@dataclass
class ImageSet:
    """Records of one source, plus the class list (empty classes included)."""
    task: str                           # "cls" or "det"
    records: list[ImageRecord]
    classes: list[str]
    notes: list[str] = field(default_factory=list)  # annotation problems met while reading
    outside: list[str] = field(default_factory=list)  # file paths refused by the dataset-path rule (never read)


CHANNELS = {"1": 1, "L": 1, "P": 3, "RGB": 3, "RGBA": 4, "CMYK": 4, "I": 1, "F": 1, "I;16": 1, "LA": 2, "YCbCr": 3}


def _scan_one(rec: ImageRecord) -> None:
    if rec.array is not None:
        rec.height, rec.width = rec.array.shape[:2]
        rec.channels = 1 if rec.array.ndim == 2 else rec.array.shape[2]
        rec.sha1 = hashlib.sha1(rec.array.tobytes()).hexdigest()
        im = Image.fromarray(rec.array)
        rec.hash, rec.thumb = dhash(im), thumbnail(im)
        return
    try:
        rec.sha1 = hashlib.sha1(rec.path.read_bytes()).hexdigest()
        with Image.open(rec.path) as im:
            rec.width, rec.height, rec.channels = im.width, im.height, CHANNELS.get(im.mode, len(im.getbands()))
            im.draft("RGB", (64, 64))  # JPEG: decode at 1/8 scale (still reads every byte: truncation shows)
            im.load()
            rec.hash, rec.thumb = dhash(im), thumbnail(im)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        rec.error = f"{type(err).__name__}: {err}"[:200]


def scan(image_set: ImageSet) -> ImageSet:
    for rec in image_set.records:
        _scan_one(rec)
    return image_set


# ----------------------------------------------------------------------------- readers
def _is_image_name(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_EXTS


def read_imagefolder(root: Path) -> ImageSet:
    from r1.data.formats import inside_dataset

    split_dirs = [root / s for s in SPLITS if (root / s).is_dir()]
    if not split_dirs:
        split_dirs = [root]
    classes = sorted({d.name for sd in split_dirs for d in sd.iterdir() if d.is_dir()})
    records, outside = [], []
    for sd in split_dirs:
        split = sd.name if sd != root else "all"
        for c in classes:
            files = sorted(p for p in (sd / c).rglob("*") if _is_image_name(p)) if (sd / c).is_dir() else []
            outside += [str(p) for p in files if not inside_dataset(root, p)]  # a symlink leading out
            records += [ImageRecord(split, p, c) for p in files if inside_dataset(root, p)]
    return ImageSet("cls", records, classes, outside=outside)


def read_digits(options: dict) -> ImageSet:
    """The embedded digits, 8x8, in the split the config's data section gives training
    (`r1.models.cls.data.digits_split`: with data.group_duplicates, duplicates grouped)."""
    from r1.config import DataConfig, from_dict
    from r1.models.cls.data import digits_source, digits_split

    x, y = digits_source()
    parts = digits_split(from_dict(DataConfig, {"name": "digits", **options}, "data"))
    records = [ImageRecord(split, None, str(int(y[i])), array=x[i], meta={"index": int(i)})
               for split, idx in zip(SPLITS, parts) for i in idx]
    return ImageSet("cls", records, [str(i) for i in range(10)])


def voc_splits(root: Path) -> dict[str, list[str]]:
    """ImageSets/Main/<split>.txt -> ids; `trainval` is left out when train and val exist (it repeats them)."""
    files = {f.stem: f for f in sorted((root / "ImageSets" / "Main").glob("*.txt")) if "_" not in f.stem}
    if "train" in files and "val" in files:
        files.pop("trainval", None)
    return {s: [ln.split()[0] for ln in f.read_text().splitlines() if ln.strip()] for s, f in files.items()}


def read_voc(root: Path) -> ImageSet:
    from r1.data.formats import DatasetPaths, parse_voc_xml, voc_annotation, voc_image

    records, names, rule = [], set(), DatasetPaths(root)
    for split, ids in voc_splits(root).items():
        for img_id in ids:
            ann = voc_annotation(rule, img_id)
            if ann is None:
                continue
            objs, boxes, difficult, filename = parse_voc_xml(ann)
            path = voc_image(rule, img_id, filename)
            if path is None:
                continue
            names.update(objs)
            records.append(ImageRecord(split, path, None, boxes, list(objs),
                                       meta={"id": img_id, "difficult": difficult}))
    rule.warn("voc")
    if not records:
        raise DataError(f"{root}: no image listed in ImageSets/Main/*.txt"
                        + (f" leads inside the dataset ({len(rule.outside)} lead outside it)" if rule.outside else ""))
    return ImageSet("det", records, sorted(names), outside=rule.outside)


def coco_files(root: Path) -> dict[str, tuple[Path, Path]]:
    """split -> (annotation file, images folder) for a COCO file, or a folder of annotations/instances_*.json."""
    if root.is_file():
        return {root.stem.replace("instances_", ""): (root, root.parent)}
    out = {}
    for f in sorted((root / "annotations").glob("instances_*.json")):
        split = f.stem[len("instances_"):]
        images = next((d for d in (root / "images", root / split) if d.is_dir()), root)
        out[split] = (f, images)
    return out


def read_coco(root: Path) -> ImageSet:
    from r1.data.formats import DatasetPaths, load_coco_json

    records, classes = [], {}
    rule = DatasetPaths(root if root.is_dir() else root.parent)
    for split, (ann_file, images) in coco_files(root).items():
        data = load_coco_json(ann_file)
        cats = {c["id"]: c["name"] for c in data["categories"]}
        classes.update({n: None for n in sorted(cats.values())})
        per_image: dict[int, list] = {im["id"]: [] for im in data["images"]}
        for a in data.get("annotations", []):
            if a["image_id"] in per_image and not a.get("iscrowd", 0):
                per_image[a["image_id"]].append(a)
        for im in data["images"]:
            path = rule.file(im["file_name"], images)
            if path is None:
                continue
            anns = per_image[im["id"]]
            xywh = np.array([a["bbox"] for a in anns], dtype=np.float32).reshape(-1, 4)
            boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1)
            labels = [cats.get(a["category_id"], str(a["category_id"])) for a in anns]
            records.append(ImageRecord(split, path, None, boxes, labels,
                                       meta={"id": im["id"], "file_name": im["file_name"]}))
    rule.warn("coco")
    return ImageSet("det", records, list(classes), outside=rule.outside)


def read_images(source: Source) -> ImageSet:
    readers = {"imagefolder": lambda: read_imagefolder(source.root), "voc": lambda: read_voc(source.root),
               "coco": lambda: read_coco(source.root), "digits": lambda: read_digits(source.options)}
    return scan(readers[source.kind]())


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1))
