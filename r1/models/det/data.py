"""Detection data: embedded digit scenes, Pascal VOC and COCO-JSON datasets.

Items are `(image (3, S, S) float, target)` with target {"boxes" (N, 4) x1y1x2y2 input pixels,
"labels" (N,) int64 0-based, "image_id" int, "orig_size" (2,) (h, w), "scale" (2,) (sx, sy)};
evaluation targets also carry "gt_boxes"/"gt_labels" in original image pixels. Annotation
problems are counted and logged when the dataset is built; a file that cannot be used raises
`DataError` naming it. An image that fails to decode mid-epoch yields None (skipped by collate).
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from r1.data import DataBundle, register_data
from r1.data.formats import DatasetPaths, load_coco_json, parse_voc_xml, resolve_path, voc_annotation, voc_image
from r1.data.unreadable import UNREADABLE
from r1.errors import DataError
from r1.models.det.config import COCOConfig, DigitScenesConfig, VOCConfig
from r1.models.det.mix import with_mosaic
from r1.models.det.transforms import DetDataConfig, build_transforms, det_collate, make_sample, preprocess_meta

log = logging.getLogger(__name__)


@dataclass
class Record:
    """One annotated image. `path` is None for generated images."""
    path: Path | None
    boxes: np.ndarray  # (N, 4) float32, x1y1x2y2 original pixels
    labels: np.ndarray  # (N,) int64
    image_id: int
    size: tuple[int, int] = (0, 0)  # (h, w)


class DetDataset(Dataset):
    """Records + transforms. `load(i)` returns the uint8 (3, H, W) image or None if unreadable."""

    def __init__(self, records: list[Record], transform, keep_gt: bool):
        self.records, self.transform, self.keep_gt = records, transform, keep_gt

    def __len__(self) -> int:
        return len(self.records)

    def load(self, i: int) -> torch.Tensor | None:
        path = self.records[i].path
        try:
            with Image.open(path) as im:
                return torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1).contiguous()
        except (OSError, ValueError, SyntaxError) as err:
            UNREADABLE.note(path, err)
            return None

    def __getitem__(self, i: int):
        rec, image = self.records[i], self.load(i)
        if image is None:
            return None
        img, target = self.transform(*make_sample(image, rec.boxes, rec.labels))
        target["image_id"] = rec.image_id
        target["orig_size"] = torch.tensor(image.shape[-2:])
        if self.keep_gt:
            target["gt_boxes"] = torch.as_tensor(rec.boxes, dtype=torch.float32).reshape(-1, 4)
            target["gt_labels"] = torch.as_tensor(rec.labels, dtype=torch.int64)
        return img, target


def clean_boxes(boxes: np.ndarray, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Clip to the image; returns (clipped boxes, mask of non-degenerate ones)."""
    boxes = boxes.reshape(-1, 4).astype(np.float32)
    if h and w:
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, h)
    ok = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return boxes, ok


def _image_size(path: Path, stats: Counter) -> tuple[int, int] | None:
    """(h, w) from the file header, or None (counted) if the file is missing or not an image."""
    try:
        with Image.open(path) as im:
            return im.height, im.width
    except (OSError, ValueError):
        stats["unreadable images"] += 1
        log.warning("unreadable or missing image %s: skipped", path)
        return None


OUTSIDE = "images outside the dataset root skipped"  # the dataset-path rule (r1/data/formats.py)
DROPPED = ("degenerate boxes dropped", "boxes of unlisted classes dropped", "boxes of unknown images dropped",
           "difficult boxes dropped")


def _finish(name: str, split: str, records: list[Record], stats: Counter, where: Path,
            train: bool = False) -> list[Record]:
    """Count (into `stats`), log and check one split: no images, or a training split without a single
    usable box, is a DataError with the counts; dropped boxes are a warning (and `data/train_*` metrics)."""
    stats["images"] = len(records)
    stats["boxes"] = sum(len(r.labels) for r in records)
    stats["images without boxes"] = sum(len(r.labels) == 0 for r in records)
    counts = ", ".join(f"{v} {k}" for k, v in stats.items() if v)
    log.info("%s %s: %s", name, split, counts)
    if not records:
        raise DataError(f"{where}: no usable images in the {split} split ({counts})")
    dropped = sum(stats[k] for k in DROPPED)
    if train and stats["boxes"] == 0:
        raise DataError(f"{where}: no usable boxes in the {split} split, nothing to learn ({counts})")
    if dropped:
        log.warning("%s %s: %d of %d boxes dropped (%s); see %s", name, split, dropped, dropped + stats["boxes"],
                    ", ".join(f"{stats[k]} {k}" for k in DROPPED if stats[k]), where)
    return records


def _train_stats(stats: Counter) -> dict[str, int]:
    """The training split's counts as `data/train_*` metrics."""
    return {f"train_{k.replace(' ', '_')}": int(v) for k, v in stats.items()}


def _bundle(cfg: DetDataConfig, name: str, splits: dict[str, list[Record] | None], classes: list[str],
            extra_meta: dict | None = None, stats: dict[str, int] | None = None) -> DataBundle:
    train_tf, eval_tf = build_transforms(cfg, train=True), build_transforms(cfg, train=False)

    def ds(key, train):
        recs = splits.get(key)
        if recs is None:
            return None
        return with_mosaic(DetDataset(recs, train_tf, False), cfg) if train else DetDataset(recs, eval_tf, True)

    meta = {"task": "det", "dataset": name, "classes": list(classes), "num_classes": len(classes),
            "preprocess": preprocess_meta(cfg), **(extra_meta or {})}
    return DataBundle(ds("train", True), ds("val", False), ds("test", False), "det", meta, det_collate,
                      stats=stats or {})


# ----------------------------------------------------------------------------- VOC
def _voc_ids(root: Path, split: str) -> list[str]:
    f = root / "ImageSets" / "Main" / f"{split}.txt"
    if not f.is_file():
        raise DataError(f"{f}: split file not found (VOC expects ImageSets/Main/<split>.txt)")
    return [line.split()[0] for line in f.read_text().splitlines() if line.strip()]


@register_data("voc", VOCConfig)
def voc(cfg: VOCConfig, seed: int) -> DataBundle:
    """Pascal VOC layout; classes are the sorted distinct object names unless data.classes lists them."""
    root = Path(cfg.root)
    if not cfg.root or not (root / "Annotations").is_dir():
        raise DataError(f"data.root: {cfg.root!r} is not a VOC directory (needs Annotations/, ImageSets/Main/, "
                        "JPEGImages/)")
    names = {"train": cfg.train_split, "val": cfg.val_split, "test": cfg.test_split}
    rule = {k: DatasetPaths(root) for k in names}
    parsed = {k: {i: parse_voc_xml(ann) for i in _voc_ids(root, s) if (ann := voc_annotation(rule[k], i))}
              for k, s in names.items() if s}
    classes = list(cfg.classes) or sorted({n for p in parsed.values() for a in p.values() for n in a[0]})
    index = {c: i for i, c in enumerate(classes)}
    splits, every = {}, {}
    for key, anns in parsed.items():
        stats, records = Counter(), []
        for n, (img_id, (objs, boxes, difficult, filename)) in enumerate(anns.items()):
            path = voc_image(rule[key], img_id, filename)
            hw = None if path is None else _image_size(path, stats)
            if hw is None:
                continue
            boxes, ok = clean_boxes(boxes, *hw)
            stats["degenerate boxes dropped"] += int((~ok).sum())
            known = np.array([o in index for o in objs], dtype=bool)
            stats["boxes of unlisted classes dropped"] += int((ok & ~known).sum())
            ok &= known
            if cfg.skip_difficult:
                stats["difficult boxes dropped"] += int((ok & np.array(difficult, dtype=bool)).sum())
                ok &= ~np.array(difficult, dtype=bool)
            labels = np.array([index.get(o, -1) for o in objs], dtype=np.int64)[ok]
            records.append(Record(path, boxes[ok], labels, n + 1, hw))
        if rule[key].outside:
            stats[OUTSIDE] = len(rule[key].outside)
            rule[key].warn(f"voc {names[key]}:")
        splits[key] = _finish("voc", names[key], records, stats, root, train=key == "train")
        every[key] = stats
    return _bundle(cfg, "voc", splits, classes, stats=_train_stats(every["train"]))


# ----------------------------------------------------------------------------- COCO
def _coco_records(data: dict, images_dir: Path, cat_index: dict[int, int], stats: Counter) -> list[Record]:
    per_image: dict[int, list] = {im["id"]: [] for im in data["images"]}
    for a in data.get("annotations", []):
        if a.get("iscrowd", 0):
            stats["crowd boxes ignored"] += 1
        elif a["category_id"] not in cat_index:
            stats["boxes of unlisted classes dropped"] += 1
        elif a["image_id"] not in per_image:
            stats["boxes of unknown images dropped"] += 1
        else:
            per_image[a["image_id"]].append(a)
    records, rule = [], DatasetPaths(images_dir)
    for im in data["images"]:
        path = rule.file(im["file_name"])
        hw = None if path is None else _image_size(path, stats)
        if hw is None:
            continue
        anns = per_image[im["id"]]
        xywh = np.array([a["bbox"] for a in anns], dtype=np.float32).reshape(-1, 4)
        boxes, ok = clean_boxes(np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1), *hw)
        stats["degenerate boxes dropped"] += int((~ok).sum())
        labels = np.array([cat_index[a["category_id"]] for a in anns], dtype=np.int64).reshape(-1)[ok]
        records.append(Record(path, boxes[ok], labels, int(im["id"]), hw))
    if rule.outside:
        stats[OUTSIDE] = len(rule.outside)
        rule.warn("coco:")
    return records


def _converted_layout(cfg: COCOConfig) -> COCOConfig:
    """data.root=DIR as `r1 data convert voc2coco` writes it (DIR/annotations/instances_<split>.json,
    DIR/images/), used when the configured training annotation file is not there."""
    ann = lambda s: f"annotations/instances_{s}.json" if (Path(cfg.root) / f"annotations/instances_{s}.json").is_file() else ""  # noqa: E731
    if not cfg.root or resolve_path(cfg.root, cfg.train_ann).is_file() or not ann("train"):
        return cfg
    return replace(cfg, train_images="images", train_ann=ann("train"), val_images="images", val_ann=ann("val"),
                   test_images="images" if ann("test") else "", test_ann=ann("test"))


@register_data("coco", COCOConfig)
def coco(cfg: COCOConfig, seed: int) -> DataBundle:
    """COCO JSON (images dir + annotation file per split); classes from the train file's categories."""
    cfg = _converted_layout(cfg)
    split_files = {"train": (cfg.train_images, cfg.train_ann), "val": (cfg.val_images, cfg.val_ann),
                   "test": (cfg.test_images, cfg.test_ann)}
    loaded = {k: (resolve_path(cfg.root, im), load_coco_json(resolve_path(cfg.root, ann)))
              for k, (im, ann) in split_files.items() if ann}
    cats = sorted(loaded["train"][1]["categories"], key=lambda c: c["id"])
    if not cats:
        raise DataError(f"{resolve_path(cfg.root, cfg.train_ann)}: 'categories' is empty; list each class as "
                        '{"id": <int>, "name": <str>}')
    if cfg.classes:
        by_name = {c["name"]: c["id"] for c in cats}
        missing = [n for n in cfg.classes if n not in by_name]
        if missing:
            raise DataError(f"{resolve_path(cfg.root, cfg.train_ann)}: data.classes {missing} not among its "
                            f"categories {sorted(by_name)}")
        cat_ids, classes = [by_name[n] for n in cfg.classes], list(cfg.classes)
    else:
        cat_ids, classes = [c["id"] for c in cats], [c["name"] for c in cats]
    cat_index = {cid: i for i, cid in enumerate(cat_ids)}
    splits, every = {}, {}
    for key, (images_dir, data) in loaded.items():
        stats = every[key] = Counter()
        splits[key] = _finish("coco", key, _coco_records(data, images_dir, cat_index, stats), stats,
                              resolve_path(cfg.root, split_files[key][1]), train=key == "train")
    # category_ids maps training indices back to the annotation file's ids (for results JSON).
    return _bundle(cfg, "coco", splits, classes, {"category_ids": cat_ids}, _train_stats(every["train"]))


# ----------------------------------------------------------------------------- digit scenes
class DigitScenes(DetDataset):
    """Scenes generated on demand, deterministically from (split_seed, split, index)."""

    def __init__(self, cfg: DigitScenesConfig, digits: torch.Tensor, labels: np.ndarray, count: int,
                 split: int, transform, keep_gt: bool):
        super().__init__([], transform, keep_gt)
        self.cfg, self.digits, self.digit_labels, self.count, self.split = cfg, digits, labels, count, split
        self.records = [self.scene_record(i) for i in range(count)]  # boxes are cheap; pixels made lazily

    def _rng(self, i: int) -> np.random.Generator:
        return np.random.default_rng([self.cfg.split_seed, self.split, i])

    def _layout(self, rng):
        c, out = self.cfg, []
        for _ in range(int(rng.integers(c.digits_min, c.digits_max + 1))):
            for _try in range(20):
                s = int(rng.integers(c.digit_min, min(c.digit_max, c.canvas) + 1))
                x, y = int(rng.integers(0, c.canvas - s + 1)), int(rng.integers(0, c.canvas - s + 1))
                if all(x + s <= a or a + b <= x or y + s <= bb or bb + b <= y for a, bb, b, _ in out):
                    out.append((x, y, s, int(rng.integers(len(self.digit_labels)))))
                    break
        return out

    def _ink(self, k: int, s: int) -> torch.Tensor:
        d = self.digits[k][None, None]  # (1, 1, 8, 8) in [0, 1]
        return F.interpolate(d, size=(s, s), mode="bilinear", align_corners=False)[0, 0].clamp(0, 1)

    def scene_record(self, i: int) -> Record:
        boxes, labels = [], []
        for x, y, s, k in self._layout(self._rng(i)):
            ys, xs = torch.nonzero(self._ink(k, s) > 0.25, as_tuple=True)
            boxes.append([x + xs.min().item(), y + ys.min().item(), x + xs.max().item() + 1, y + ys.max().item() + 1])
            labels.append(int(self.digit_labels[k]))
        return Record(None, np.array(boxes, np.float32).reshape(-1, 4), np.array(labels, np.int64), i + 1,
                      (self.cfg.canvas, self.cfg.canvas))

    def load(self, i: int) -> torch.Tensor:
        rng, c = self._rng(i), self.cfg.canvas
        layout = self._layout(rng)
        bg = torch.tensor(rng.uniform(0, 0.45, 3), dtype=torch.float32).view(3, 1, 1)
        img = bg + torch.tensor(rng.normal(0, 0.04, (3, c, c)), dtype=torch.float32)
        for x, y, s, k in layout:
            fg = torch.tensor(rng.uniform(0.55, 1.0, 3), dtype=torch.float32).view(3, 1, 1)
            a = self._ink(k, s)[None]  # (1, s, s) alpha
            img[:, y:y + s, x:x + s] = img[:, y:y + s, x:x + s] * (1 - a) + fg * a
        return (img.clamp(0, 1) * 255).round().to(torch.uint8)


@register_data("det_digits", DigitScenesConfig)
def det_digits(cfg: DigitScenesConfig, seed: int) -> DataBundle:
    """Digit scenes: scikit-learn's handwritten digits pasted on noisy canvases, exact boxes, 10 classes."""
    from sklearn.datasets import load_digits

    if cfg.digits_min > cfg.digits_max or cfg.digit_min > cfg.digit_max:
        raise DataError("data.digits_min/digit_min must not exceed digits_max/digit_max")
    d = load_digits()
    perm = np.random.default_rng(cfg.split_seed).permutation(len(d.target))
    n_tr, n_va = int(0.7 * len(perm)), int(0.15 * len(perm))
    parts = [perm[:n_tr], perm[n_tr:n_tr + n_va], perm[n_tr + n_va:]]
    train_tf, eval_tf = build_transforms(cfg, train=True), build_transforms(cfg, train=False)
    digits = torch.tensor(d.images, dtype=torch.float32) / 16.0
    sets = [DigitScenes(cfg, digits[p], d.target[p], n, split, train_tf if split == 0 else eval_tf, split > 0)
            for split, (p, n) in enumerate(zip(parts, (cfg.num_train, cfg.num_val, cfg.num_test)))]
    classes = list(cfg.classes) or [str(i) for i in range(10)]
    meta = {"task": "det", "dataset": "det_digits", "classes": classes, "num_classes": len(classes),
            "preprocess": preprocess_meta(cfg)}
    return DataBundle(with_mosaic(sets[0], cfg), sets[1], sets[2], "det", meta, det_collate)
