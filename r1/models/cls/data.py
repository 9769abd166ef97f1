"""Image classification data: the embedded digits and any ImageFolder directory."""
from __future__ import annotations

import functools
import logging
from pathlib import Path

import numpy as np
import torch
from PIL import UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision import datasets
from torchvision.transforms import v2

from r1.data import DataBundle, register_data, skip_none_collate
from r1.data.formats import DatasetPaths, readable_image, split_indices
from r1.data.imagehash import duplicate_groups, duplicate_pairs, file_signature, signature
from r1.data.unreadable import UNREADABLE
from r1.errors import DataError
from r1.models.cls.config import DigitsConfig, ImageFolderConfig, augment_names

log = logging.getLogger(__name__)

# ImageNet statistics: a sensible default for natural images and harmless for digits.
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def _normalize() -> v2.Transform:
    return v2.Normalize(MEAN, STD)


# ----------------------------------------------------------------------------- augmentation policies
# Per-image policies run on uint8 images after the dataset's geometry (`basic`) and before float
# conversion; `cutmix` / `mixup` mix each training image with a random partner (`MixedPairs`).
PER_IMAGE = {
    "rotation": lambda: v2.RandomRotation(15),
    "grayscale": lambda: v2.RandomGrayscale(p=0.2),
    "equalize": lambda: v2.RandomEqualize(p=0.5),
    "colorjitter": lambda: v2.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1),
    "randaugment": lambda: v2.RandAugment(num_ops=2, magnitude=9),
    "trivialaugment": lambda: v2.TrivialAugmentWide(),
    "autoaugment": lambda: v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET),
}
PAIR_MIX = {"cutmix": lambda k: v2.CutMix(num_classes=k, alpha=1.0),
            "mixup": lambda k: v2.MixUp(num_classes=k, alpha=0.2)}


def policy_transforms(names: list[str]) -> list[v2.Transform]:
    """The per-image transforms of policy `names` (uint8 image in, uint8 image out), in table order."""
    return [PER_IMAGE[n]() for n in names if n in PER_IMAGE]


class MixedPairs(Dataset):
    """Training items mixed with a random partner item by CutMix or MixUp (one picked at random when
    both are on): `(mixed image, soft target)` with the target a float vector over `num_classes`.
    Pairing inside the item (not the batch) keeps augmentation a function of the per-sample seed, so
    an exact resume replays it; a partner drawn from the shuffled set is what batch mixing pairs too."""

    def __init__(self, base: Dataset, num_classes: int, names: list[str]):
        self.base, self.num_classes = base, num_classes
        self.mixers = [PAIR_MIX[n](num_classes) for n in names if n in PAIR_MIX]

    def __len__(self) -> int:
        return len(self.base)

    def __getattr__(self, name: str):  # the wrapped set's attributes (labels, indices, ...) for samplers, reports
        if name.startswith("__") or "base" not in self.__dict__:
            raise AttributeError(name)
        return getattr(self.__dict__["base"], name)

    def __getitem__(self, i: int):
        first = self.base[i]
        second = self.base[int(torch.randint(len(self.base), ()))]
        if first is None:
            return None
        if second is None:  # an unreadable partner: the item itself, as a one-hot target
            return first[0], torch.nn.functional.one_hot(torch.as_tensor(first[1]), self.num_classes).float()
        mixer = self.mixers[int(torch.randint(len(self.mixers), ()))] if len(self.mixers) > 1 else self.mixers[0]
        images = torch.stack([first[0], second[0]])
        labels = torch.as_tensor([int(first[1]), int(second[1])])
        mixed, soft = mixer(images, labels)  # pairs item 0 with item 1 (the batch rolled by one)
        return mixed[0], soft[0]


def with_pair_mixing(train: Dataset, num_classes: int, names: list[str]) -> Dataset:
    """`train` wrapped in `MixedPairs` when the policy has cutmix or mixup, else `train`."""
    return MixedPairs(train, num_classes, names) if any(n in PAIR_MIX for n in names) else train


class TensorImages(Dataset):
    """In-memory uint8 images (N, 3, H, W) + labels, with a v2 transform applied per item."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: v2.Transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.transform(self.images[i]), self.labels[i]


def digits_source() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as (uint8 images (N, 8, 8) on 0..255, labels (N,))."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images / 16.0 * 255).round().astype(np.uint8), d.target.astype(np.int64)


def digits_split(cfg: DigitsConfig) -> tuple[list, list, list]:
    """(train, val, test) indices of the digits; with `group_duplicates`, duplicate groups of the 8x8
    images (the rule `r1 data inspect` reports by) each land in one split. `r1 data inspect` reads
    this split too, so what it reports is what training uses."""
    _, labels = digits_source()
    groups = _digit_groups() if cfg.group_duplicates else None
    return split_indices(len(labels), cfg.val_frac, cfg.test_frac, cfg.split_seed, groups)


@functools.lru_cache(maxsize=1)
def _digit_groups() -> list[int]:
    from PIL import Image

    images, _ = digits_source()
    pairs = duplicate_pairs([signature(Image.fromarray(im)) for im in images])
    return duplicate_groups(len(images), pairs)


@register_data("digits", DigitsConfig)
def digits(cfg: DigitsConfig, seed: int) -> DataBundle:
    """scikit-learn's 1,797 8x8 handwritten digits (bundled with it), upscaled and made RGB."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0  # (N, 8, 8) -> (N, 1, 8, 8)
    x = torch.nn.functional.interpolate(x, size=(cfg.img_size,) * 2, mode="bilinear", align_corners=False)
    x = (x.clamp(0, 1) * 255).round().to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    y = torch.tensor(d.target, dtype=torch.int64)
    train_i, val_i, test_i = digits_split(cfg)
    base = [v2.ToDtype(torch.float32, scale=True), _normalize()]
    names = augment_names(cfg.augment)
    # `basic`: shifts by cropping a padded image: ~4x cheaper per item than RandomAffine, as good on digits.
    aug = [v2.RandomCrop(cfg.img_size, padding=max(1, cfg.img_size // 10))] if "basic" in names else []
    train_tf, eval_tf = v2.Compose(aug + policy_transforms(names) + base), v2.Compose(base)
    pick = lambda idx, tf: TensorImages(x[idx], y[idx], tf)  # noqa: E731
    meta = _meta([str(i) for i in range(10)], cfg.img_size)
    train = with_pair_mixing(pick(train_i, train_tf), meta["num_classes"], names)
    return DataBundle(train, pick(val_i, eval_tf), pick(test_i, eval_tf), "cls", meta)


def _meta(classes: list[str], size: int) -> dict:
    return {"classes": classes, "num_classes": len(classes),
            "preprocess": {"size": [size, size], "mean": MEAN, "std": STD, "resize": "bilinear"}}


class CheckedImageFolder(datasets.ImageFolder):
    """ImageFolder that drops unreadable files, and files leading outside the dataset root `top` (the
    dataset-path rule, r1/data/formats.py: a symlink out of it), up front and reports how many it dropped."""

    def __init__(self, root: Path, classes: list[str] | None = None, top: Path | None = None):
        if classes is not None:  # keep split folders on one class index table
            self.find_classes = lambda _dir: (classes, {c: i for i, c in enumerate(classes)})
        try:
            super().__init__(str(root), allow_empty=True)
        except FileNotFoundError as err:
            raise DataError(f"{root}: {err}") from None
        rule = DatasetPaths(top or root)
        self.outside = [p for p, _ in self.samples if rule.file(p) is None]
        rule.warn("imagefolder:")
        out = set(self.outside)
        ok = [p not in out and readable_image(p) for p, _ in self.samples]
        self.skipped = [p for (p, _), good in zip(self.samples, ok) if not good]
        self.skipped = [p for p in self.skipped if p not in out]
        if self.skipped:
            log.warning("%s: skipped %d unreadable image(s), e.g. %s", root, len(self.skipped), self.skipped[0])
        self.samples = self.imgs = [s for s, good in zip(self.samples, ok) if good]
        self.targets = [t for _, t in self.samples]

    def __getitem__(self, i: int):
        try:
            return super().__getitem__(i)
        except (OSError, UnidentifiedImageError, ValueError) as err:  # passed verify(), fails to decode (truncated)
            UNREADABLE.note(self.samples[i][0], err)
            return None  # dropped by `skip_none_collate`


class Transformed(Dataset):
    """`base[indices[i]]` with `transform` applied to the image; unreadable items stay None."""

    def __init__(self, base: Dataset, indices: list[int], transform: v2.Transform):
        self.base, self.indices, self.transform = base, indices, transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        item = self.base[self.indices[i]]
        return None if item is None else (self.transform(item[0]), item[1])


def _check_classes(root: Path, classes: list[str], folder: CheckedImageFolder, train_indices: list[int]) -> None:
    """Every class needs readable images: an empty class (or one of only broken files) is a class the model
    is asked to predict but can never learn (DataError); one without training images after the split is
    a warning."""
    have = np.bincount(np.asarray(folder.targets, dtype=np.int64), minlength=len(classes))
    empty = [c for c, n in zip(classes, have) if n == 0]
    if empty:
        broken = {c: sum(Path(p).relative_to(folder.root).parts[0] == c for p in folder.skipped) for c in empty}
        detail = ", ".join(f"{c!r} ({broken[c]} unreadable file(s) skipped)" if broken[c] else repr(c) for c in empty)
        raise DataError(f"{folder.root}: class(es) without readable images: {detail}; add images or remove the "
                        f"folder(s) ({len(classes) - len(empty)} of {len(classes)} classes have images)")
    in_train = set(folder.targets[i] for i in train_indices)
    unseen = [c for i, c in enumerate(classes) if i not in in_train]
    if unseen:
        log.warning("%s: class(es) %s have no image in the training split (all went to val/test); the model "
                    "cannot learn them", root, ", ".join(unseen))


def _file_groups(samples: list[tuple[str, int]], root: Path) -> list[int]:
    """Duplicate groups of an ImageFolder's files (`r1.data.imagehash`), logged with their count."""
    import time

    t0 = time.perf_counter()
    pairs = duplicate_pairs([file_signature(p) for p, _ in samples])
    groups = duplicate_groups(len(samples), pairs)
    grouped = len(samples) - len(set(groups))
    log.info("%s: %d duplicate pair(s) kept in one split each (%d image(s) follow another; %.1f s)", root,
             len(pairs), grouped, time.perf_counter() - t0)
    return groups


@register_data("imagefolder", ImageFolderConfig)
def imagefolder(cfg: ImageFolderConfig, seed: int) -> DataBundle:
    """`root/<class>/*.jpg` (split by split_seed) or `root/{train,val,test}/<class>/*.jpg`."""
    root = Path(cfg.root)
    if not cfg.root or not root.is_dir():
        raise DataError(f"data.root: directory not found: {cfg.root or '(empty)'}; "
                        "expected <root>/<class>/<images> or <root>/train/<class>/<images>")
    size = cfg.img_size
    to_float = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), _normalize()]
    names = augment_names(cfg.augment)
    eval_tf = v2.Compose([v2.Resize((size, size), antialias=True)] + to_float)
    geometry = ([v2.RandomResizedCrop(size, scale=(0.6, 1.0), antialias=True), v2.RandomHorizontalFlip()]
                if "basic" in names else [v2.Resize((size, size), antialias=True)])
    train_tf = v2.Compose(geometry + [v2.ToImage()] + policy_transforms(names) + to_float[1:]) if names else eval_tf
    whole = lambda ds, tf: Transformed(ds, list(range(len(ds))), tf) if ds is not None else None  # noqa: E731
    if (root / "train").is_dir():
        if cfg.group_duplicates:
            log.warning("%s: data.group_duplicates applies to seeded splits; this root is split already (train/, "
                        "val/) and is used as it is (`r1 data inspect %s` lists duplicates across its splits)",
                        root, root)
        train_dir = CheckedImageFolder(root / "train", top=root)
        classes = train_dir.classes
        folders = [train_dir] + [CheckedImageFolder(root / s, classes, top=root) if (root / s).is_dir() else None
                                 for s in ("val", "test")]
        if folders[1] is None:
            raise DataError(f"{root}: has train/ but no val/ split")
        train, val, test = whole(folders[0], train_tf), whole(folders[1], eval_tf), whole(folders[2], eval_tf)
    else:
        folders = [CheckedImageFolder(root)]
        classes = folders[0].classes
        tr, va, te = split_indices(len(folders[0]), cfg.val_frac, cfg.test_frac, cfg.split_seed,
                                   _file_groups(folders[0].samples, root) if cfg.group_duplicates else None)
        train, val = Transformed(folders[0], tr, train_tf), Transformed(folders[0], va, eval_tf)
        test = Transformed(folders[0], te, eval_tf) if te else None
    if len(train) == 0:
        raise DataError(f"{root}: empty dataset (no readable images with extensions "
                        f"{', '.join(datasets.folder.IMG_EXTENSIONS)})")
    if len(val) == 0:
        raise DataError(f"{root}: the validation split is empty; add images or raise data.val_frac")
    _check_classes(root, classes, folders[0], train.indices)
    skipped = sum(len(f.skipped) for f in folders if f is not None)
    outside = sum(len(f.outside) for f in folders if f is not None)
    train = with_pair_mixing(train, len(classes), names)
    return DataBundle(train, val, test, "cls", _meta(classes, size), skip_none_collate,
                      stats={"skipped_images": skipped, **({"outside_root_images": outside} if outside else {})})
