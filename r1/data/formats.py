"""Generic dataset formats and file helpers shared by every family and by `r1 data`: seeded splits,
image readability, the dataset-path rule, Pascal VOC annotation files and COCO annotation JSON."""
from __future__ import annotations

import json
import logging
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from r1.errors import DataError

log = logging.getLogger(__name__)
MAX_GROUP_SHARE = 0.1  # the largest share of a val/test split one duplicate group may take


def split_indices(n: int, val_frac: float, test_frac: float, seed: int,
                  groups: list[int] | None = None) -> tuple[list, list, list]:
    """A seeded (train, val, test) partition of range(n): the same seed gives the same split everywhere.

    `groups` (a group id per item, e.g. `r1.data.imagehash.duplicate_groups`): every group lands whole
    in one split. Items are walked in the seeded order; the first item of a group met decides where
    the group goes (val until it holds its share, then test, then train), and the group's other items
    follow it. A group larger than MAX_GROUP_SHARE of a held-out split's share goes to train, so one
    picture repeated many times (32 near-identical strokes of a "1" in the digits) cannot fill a test
    split. Without groups (or with every item its own group) this is the plain seeded split."""
    perm = np.random.default_rng(seed).permutation(n).tolist()
    n_val, n_test = int(round(n * val_frac)), int(round(n * test_frac))
    if groups is None:
        return perm[n_val + n_test:], perm[:n_val], perm[n_val:n_val + n_test]
    sizes: dict[int, int] = {}
    for g in groups:
        sizes[g] = sizes.get(g, 0) + 1
    where: dict[int, int] = {}  # group -> 0 train, 1 val, 2 test
    filled, quota = [0, 0, 0], [n - n_val - n_test, n_val, n_test]
    parts: tuple[list, list, list] = ([], [], [])
    for i in perm:
        g = groups[i]
        if g not in where:
            fits = [s for s in (1, 2) if filled[s] < quota[s] and sizes[g] <= max(1.0, MAX_GROUP_SHARE * quota[s])]
            where[g] = fits[0] if fits else 0
            filled[where[g]] += sizes[g]
        parts[where[g]].append(i)
    return parts


def readable_image(path: str) -> bool:
    """Whether PIL can open and verify the image file at `path`."""
    try:
        with Image.open(path) as im:
            im.verify()
        return True
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError):
        return False


def inside_dataset(root: Path | str, path: Path | str) -> bool:
    """Whether `path` (a file a dataset names, joined to its folder) stays inside the dataset `root` once
    resolved: `..`, absolute paths and symlinks may not lead out of it. The root's own top-level folders
    may be symlinks to other storage (`root/images -> /mnt/big/images`): a path below one stays inside
    where that folder leads."""
    root_abs, path_abs = os.path.abspath(root), os.path.abspath(path)
    rel = os.path.relpath(path_abs, root_abs)
    if rel == "." or rel == ".." or rel.startswith(".." + os.sep):
        return False
    real = os.path.realpath(path_abs)
    allowed = [os.path.realpath(root_abs)]
    if os.sep in rel:
        allowed.append(os.path.realpath(os.path.join(root_abs, rel.split(os.sep)[0])))
    return any(real == a or real.startswith(a.rstrip(os.sep) + os.sep) for a in allowed)


class DatasetPaths:
    """The one rule for the file paths a dataset names (a VOC `<filename>`, a COCO `file_name`, an
    ImageFolder file, a JSONL record's `image`): every reader and writer resolves them here, and a path
    that leads out of the dataset root (`inside_dataset`) is counted, skipped with a warning and never
    read or linked.

        paths = DatasetPaths(root)
        path = paths.file(name, base=root / "images")   # None: outside the root (counted)
        paths.warn("voc train")                          # one warning line when any was skipped
    """

    def __init__(self, root: Path | str):
        self.root = Path(root)
        self.outside: list[str] = []  # the names refused, as the dataset gives them

    def file(self, name: str | Path, base: Path | str | None = None) -> Path | None:
        path = Path(base if base is not None else self.root) / name
        if inside_dataset(self.root, path):
            return path
        self.outside.append(str(name))
        return None

    def warn(self, where: str = "") -> None:
        if self.outside:
            log.warning("%s%s: skipped %d file path(s) that lead outside the dataset root, e.g. %r (never read)",
                        where + " " if where else "", self.root, len(self.outside), self.outside[0])


def voc_image(paths: DatasetPaths, img_id: str, filename: str = "") -> Path | None:
    """The image of one VOC id: JPEGImages/<id>.jpg, or the file the XML's <filename> names when there is
    no <id>.jpg (e.g. .png images); None where the rule (`DatasetPaths`) refuses it."""
    images = paths.root / "JPEGImages"
    if filename and not (images / f"{img_id}.jpg").is_file():  # a stat, no read
        return paths.file(filename, images)
    return paths.file(f"{img_id}.jpg", images)


def voc_annotation(paths: DatasetPaths, img_id: str) -> Path | None:
    """Annotations/<id>.xml of an id listed in ImageSets/Main (None: the id leads outside the root)."""
    return paths.file(f"{img_id}.xml", paths.root / "Annotations")


def resolve_path(root: str, path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() or not root else Path(root) / p


def parse_voc_xml(path: Path) -> tuple[list[str], np.ndarray, list[bool], str]:
    """VOC annotation -> (names, boxes (N, 4), difficult flags, <filename> or ""). DataError if malformed."""
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as err:
        raise DataError(f"{path}: malformed VOC annotation ({err})") from None
    names, boxes, difficult = [], [], []
    try:
        filename = (root.findtext("filename") or "").strip()
        for obj in root.iter("object"):
            bb = obj.find("bndbox")
            names.append(obj.findtext("name").strip())
            boxes.append([float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")])
            difficult.append(obj.findtext("difficult", "0").strip() == "1")
    except (AttributeError, TypeError, ValueError) as err:
        raise DataError(f"{path}: malformed VOC annotation: object without a name or a numeric "
                        f"bndbox xmin/ymin/xmax/ymax ({err})") from None
    return names, np.array(boxes, dtype=np.float32).reshape(-1, 4), difficult, filename


def load_coco_json(path: Path) -> dict:
    """Read and check a COCO annotation file; DataError naming the file when it cannot be used."""
    if not path.is_file():
        raise DataError(f"{path}: annotation file not found")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: malformed COCO annotation file (invalid JSON: {err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DataError(f"{path}: malformed COCO annotation file (needs an 'images' list)")
    if not isinstance(data.get("categories"), list):
        raise DataError(f"{path}: malformed COCO annotation file: no 'categories' list (each class as "
                        '{"id": <int>, "name": <str>}; the classes come from it)')
    try:
        for n, im in enumerate(data["images"]):
            _int_id(im["id"], f"images[{n}].id"), str(im["file_name"])
        for n, c in enumerate(data["categories"]):
            _int_id(c["id"], f"categories[{n}].id"), str(c["name"])
        for n, a in enumerate(data.get("annotations", [])):
            _int_id(a["image_id"], f"annotations[{n}].image_id")
            _int_id(a["category_id"], f"annotations[{n}].category_id")
            if len(a["bbox"]) != 4:
                raise ValueError("bbox must have 4 numbers")
            [float(v) for v in a["bbox"]]
    except (KeyError, TypeError, ValueError) as err:
        raise DataError(f"{path}: malformed COCO annotation file ({type(err).__name__}: {err})") from None
    return data


def _int_id(value, where: str) -> int:
    """COCO ids are integers: a string id ("3") would silently match nothing."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{where} must be an integer, got {value!r:.40}")
    return value
