"""Mosaic and mixup for detection training sets, switched off for the last epochs (`close_mosaic`).

Mosaic (YOLOv4/Ultralytics): four training images, each resized as the evaluation resize does
(longest side = data.size, or stretched), are placed around a random centre of a size x size canvas
(top-left, top-right, bottom-left, bottom-right, meeting at the centre; the canvas is filled with
the mean colour); their boxes move with them and are clipped to the part that stays visible. The
mosaic then goes through the dataset's training transforms like any image.

Mixup (YOLO-style): a transformed item is blended with another one at a ratio ~ Beta(32, 32) and
keeps the boxes of both.

Partners are drawn from torch's global RNG, which the trainer seeds per sample, so an exact resume
replays every mosaic. `CloseMosaic` (a trainer callback) turns both off for the final epochs: the
switch depends only on the epoch, told to it before each epoch's items are drawn.
"""
from __future__ import annotations

import logging
import math

import torch
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as TF

from r1.models.det.config import DetDataConfig, det_augment_names
from r1.models.det.transforms import make_sample, resize_params
from r1.train.callbacks import Callback, register_callback

log = logging.getLogger(__name__)

VISIBLE = 0.2  # a box cut by a mosaic seam is kept when at least this share of its area stays visible


def mosaic_layout(size: int, centre: tuple[int, int], sizes: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Top-left corners (x0, y0) of four images of `sizes` (h, w) meeting at `centre` (cx, cy):
    top-left, top-right, bottom-left, bottom-right. Parts outside the size x size canvas are cut."""
    cx, cy = centre
    (h0, w0), (h1, w1), (h2, w2), _ = sizes
    return [(cx - w0, cy - h0), (cx, cy - h1), (cx - w2, cy), (cx, cy)]


def paste(canvas: torch.Tensor, image: torch.Tensor, boxes: torch.Tensor, x0: int, y0: int,
          min_size: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Paste `image` (3, h, w) with its top-left corner at (x0, y0) into `canvas` (3, S, S), in place;
    returns the boxes moved with it and clipped to the visible part, and the mask of those kept."""
    size = canvas.shape[-1]
    h, w = image.shape[-2:]
    vx0, vy0, vx1, vy1 = max(0, x0), max(0, y0), min(size, x0 + w), min(size, y0 + h)
    if vx1 <= vx0 or vy1 <= vy0:
        return boxes.new_zeros(0, 4), torch.zeros(len(boxes), dtype=torch.bool)
    canvas[:, vy0:vy1, vx0:vx1] = image[:, vy0 - y0:vy1 - y0, vx0 - x0:vx1 - x0]
    moved = boxes + torch.tensor([x0, y0, x0, y0], dtype=boxes.dtype)
    clipped = torch.stack([moved[:, 0].clamp(vx0, vx1), moved[:, 1].clamp(vy0, vy1),
                           moved[:, 2].clamp(vx0, vx1), moved[:, 3].clamp(vy0, vy1)], 1)
    area = lambda b: (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)  # noqa: E731
    wh = clipped[:, 2:] - clipped[:, :2]
    keep = (wh.min(1).values >= max(min_size, 1e-3)) & (area(clipped) >= VISIBLE * area(moved))
    return clipped[keep], keep


class MosaicMixup(Dataset):
    """A detection training set (`DetDataset`: `load`, `records`, `transform`) with mosaic and/or mixup.
    `active = False` serves the plain items (the last `close_mosaic` epochs)."""

    def __init__(self, base: Dataset, cfg: DetDataConfig, names: list[str]):
        self.base, self.cfg = base, cfg
        self.mosaic_prob = cfg.mosaic_prob if "mosaic" in names else 0.0
        self.mixup_prob = cfg.mixup_prob if "mixup" in names else 0.0
        self.fill = torch.tensor([round(255 * m) for m in cfg.mean], dtype=torch.uint8).view(3, 1, 1)
        self.active = True

    def __len__(self) -> int:
        return len(self.base)

    def __getattr__(self, name: str):  # the wrapped set's attributes (records, ...) for samplers, reports
        if name.startswith("__") or "base" not in self.__dict__:
            raise AttributeError(name)
        return getattr(self.__dict__["base"], name)

    def _resized(self, i: int):
        """Item i's image resized as the evaluation resize does, its boxes and labels; None if unreadable."""
        image = self.base.load(i)
        if image is None:
            return None
        rec = self.base.records[i]
        h, w = image.shape[-2:]
        nh, nw = resize_params(h, w, self.cfg.size, self.cfg.letterbox)
        boxes = torch.as_tensor(rec.boxes, dtype=torch.float32).reshape(-1, 4)
        boxes = boxes * torch.tensor([nw / w, nh / h, nw / w, nh / h])
        return TF.resize(image, [nh, nw], antialias=True), boxes, torch.as_tensor(rec.labels, dtype=torch.int64)

    def mosaic(self, i: int):
        """Item i and three random partners as one size x size uint8 mosaic, its boxes and labels."""
        first = self._resized(i)
        if first is None:
            return None
        parts = [first] + [self._resized(int(torch.randint(len(self.base), ()))) for _ in range(3)]
        size = self.cfg.size
        cx, cy = (int(size * (0.25 + 0.5 * float(torch.rand(())))) for _ in range(2))
        canvas = self.fill.expand(3, size, size).clone()
        sizes = [p[0].shape[-2:] if p is not None else (0, 0) for p in parts]
        boxes, labels = [], []
        for part, (x0, y0) in zip(parts, mosaic_layout(size, (cx, cy), sizes)):
            if part is None:  # an unreadable partner leaves its quadrant empty
                continue
            kept, keep = paste(canvas, part[0], part[1], x0, y0, self.cfg.min_box_size)
            boxes.append(kept)
            labels.append(part[2][keep])
        return canvas, torch.cat(boxes), torch.cat(labels)

    def _item(self, i: int, mixing: bool):
        if not (mixing and self.mosaic_prob > 0 and float(torch.rand(())) < self.mosaic_prob):
            return self.base[i]
        built = self.mosaic(i)
        if built is None:
            return None
        img, target = self.base.transform(*make_sample(*built))
        target["image_id"] = self.base.records[i].image_id
        target["orig_size"] = torch.tensor([self.cfg.size, self.cfg.size])
        return img, target

    def __getitem__(self, i: int):
        item = self._item(i, self.active)
        if item is None or not (self.active and self.mixup_prob > 0 and float(torch.rand(())) < self.mixup_prob):
            return item
        other = self._item(int(torch.randint(len(self.base), ())), True)
        if other is None:
            return item
        r = float(torch.distributions.Beta(32.0, 32.0).sample())
        (img, target), (img2, target2) = item, other
        mixed = {**target, "boxes": torch.cat([target["boxes"], target2["boxes"]]),
                 "labels": torch.cat([target["labels"], target2["labels"]])}
        return img * r + img2 * (1 - r), mixed


def with_mosaic(train: Dataset, cfg: DetDataConfig) -> Dataset:
    """`train` wrapped in `MosaicMixup` when `data.augment` has mosaic or mixup, else `train`."""
    names = det_augment_names(cfg.augment)
    return MosaicMixup(train, cfg, names) if {"mosaic", "mixup"} & set(names) else train


def close_epoch(epochs: int, close: float) -> int:
    """The first epoch without mosaic/mixup: `close` >= 1 counts epochs, below 1 a share of `epochs`."""
    n = round(close) if close >= 1 else math.ceil(close * epochs)
    return max(0, epochs - n)


@register_callback
class CloseMosaic(Callback):
    """`data.close_mosaic`: mosaic and mixup off for the last epochs of a run (from the first epoch
    `close_epoch` names, also after a resume into them)."""
    order = 8

    def __init__(self, close: float):
        self.close, self.first_off, self.dataset = close, 0, None

    @classmethod
    def from_config(cls, cfg):
        data = cfg.data
        if not isinstance(data, DetDataConfig) or not {"mosaic", "mixup"} & set(det_augment_names(data.augment)):
            return None
        return cls(data.close_mosaic)

    def on_setup(self, trainer):
        self.dataset = trainer.data.train
        epochs = math.ceil(trainer.total_steps / trainer.steps_per_epoch)
        self.first_off = close_epoch(epochs, self.close)
        log.info("mosaic/mixup on for epochs 0-%d, off for the last %d of %d (data.close_mosaic=%g)",
                 self.first_off - 1, epochs - self.first_off, epochs, self.close)

    def on_epoch_start(self, trainer, epoch):
        active = epoch < self.first_off
        if getattr(self.dataset, "active", False) and not active:
            log.info("epoch %d: mosaic/mixup off (data.close_mosaic)", epoch)
        if isinstance(self.dataset, MosaicMixup):
            self.dataset.active = active
