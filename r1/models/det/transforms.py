"""Detection transforms (torchvision.transforms.v2 + tv_tensors.BoundingBoxes), collate, preprocessing.

A sample is `(image, target)`: image a uint8 `tv_tensors.Image` (3, H, W), target a dict with
"boxes" (`BoundingBoxes`, XYXY, pixels) and "labels" (N,) int64. The pipeline ends with a
normalised float image of a fixed size, so a batch is one tensor (B, 3, S, S).

Evaluation / inference resize is deterministic and pads only right and bottom, so a box in the
network input maps back to the original image by dividing by `scale` (sx, sy, sx, sy).
"""
from __future__ import annotations

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from r1.models.det.config import DetDataConfig, det_augment_names  # noqa: F401  (DetDataConfig re-exported)


def resize_params(h: int, w: int, size: int, letterbox: bool, jitter: float = 1.0) -> tuple[int, int]:
    """Output (height, width) of the resize step before padding / cropping to size x size."""
    if not letterbox:
        return max(1, round(size * jitter)), max(1, round(size * jitter))
    r = size * jitter / max(h, w)
    return max(1, round(h * r)), max(1, round(w * r))


class FixedResize:
    """Deterministic resize (letterbox or stretch) + right/bottom pad to size x size; records `scale`."""

    def __init__(self, size: int, letterbox: bool):
        self.size, self.letterbox = size, letterbox

    def __call__(self, image, target):
        h, w = image.shape[-2:]
        nh, nw = resize_params(h, w, self.size, self.letterbox)
        image, boxes = TF.resize(image, [nh, nw], antialias=True), TF.resize(target["boxes"], [nh, nw])
        pad = [0, 0, self.size - nw, self.size - nh]  # left, top, right, bottom
        image, boxes = TF.pad(image, pad, fill=0), TF.pad(boxes, pad)
        return image, {**target, "boxes": boxes, "scale": torch.tensor([nw / w, nh / h], dtype=torch.float32)}


class JitterResize:
    """Multi-scale training: resize to size * s (s ~ U(lo, hi)); padding / cropping happens after."""

    def __init__(self, size: int, letterbox: bool, lo: float, hi: float):
        self.size, self.letterbox, self.lo, self.hi = size, letterbox, lo, hi

    def __call__(self, image, target):
        s = self.lo + (self.hi - self.lo) * float(torch.rand(()))
        h, w = image.shape[-2:]
        nh, nw = resize_params(h, w, self.size, self.letterbox, s)
        image, boxes = TF.resize(image, [nh, nw], antialias=True), TF.resize(target["boxes"], [nh, nw])
        return image, {**target, "boxes": boxes}


class ToPlain:
    """tv_tensors -> plain tensors for the model: boxes (N, 4) float32, labels (N,) int64."""

    def __call__(self, image, target):
        out = {**target, "boxes": target["boxes"].as_subclass(torch.Tensor).float(),
               "labels": target["labels"].long()}
        return image.as_subclass(torch.Tensor), out


# Per-image policies of `data.augment` (uint8 image + boxes in, same out), in table order. Each runs
# on the original image, before the multi-scale resize; boxes leaving the image are clamped / dropped.
DET_PER_IMAGE = {
    "rotation": lambda fill: v2.RandomRotation(15, fill=fill),
    "vflip": lambda fill: v2.RandomVerticalFlip(0.5),
    "grayscale": lambda fill: v2.RandomGrayscale(p=0.2),
    "equalize": lambda fill: v2.RandomEqualize(p=0.5),
    "colorjitter": lambda fill: v2.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1),
}


def build_transforms(cfg: DetDataConfig, train: bool) -> v2.Compose:
    """`(uint8 Image, {"boxes": BoundingBoxes, "labels"})` -> `(float (3, S, S), {"boxes", "labels", ...})`.

    Training: `data.augment`'s per-image policies; mosaic / mixup wrap the dataset (r1/models/det/mix.py)."""
    norm = [v2.ToDtype(torch.float32, scale=True), v2.Normalize(cfg.mean, cfg.std)]
    names = det_augment_names(cfg.augment) if train else []
    basic = "basic" in names
    if not train or not any(n == "basic" or n in DET_PER_IMAGE for n in names):
        return v2.Compose([FixedResize(cfg.size, cfg.letterbox), *norm, ToPlain()])
    fill = {tv_tensors.Image: [round(255 * m) for m in cfg.mean], "others": 0}
    steps: list = []
    if basic and cfg.photometric:
        steps.append(v2.RandomPhotometricDistort(p=0.5))
    steps += [DET_PER_IMAGE[n](fill) for n in names if n in DET_PER_IMAGE]
    if "rotation" in names:
        steps += [v2.ClampBoundingBoxes(), v2.SanitizeBoundingBoxes(cfg.min_box_size)]
    if basic and cfg.zoom_out > 1.0:
        steps.append(v2.RandomZoomOut(fill=fill, side_range=(1.0, cfg.zoom_out), p=0.5))
    if basic and cfg.iou_crop:
        steps += [v2.RandomApply([v2.RandomIoUCrop()], p=0.5), v2.SanitizeBoundingBoxes(cfg.min_box_size)]
    if basic and cfg.hflip > 0:
        steps.append(v2.RandomHorizontalFlip(cfg.hflip))
    lo, hi = cfg.scale_range if basic else (1.0, 1.0)
    steps += [JitterResize(cfg.size, cfg.letterbox, lo, hi), *norm,
              v2.RandomCrop(cfg.size, pad_if_needed=True, fill=0),
              v2.ClampBoundingBoxes(), v2.SanitizeBoundingBoxes(cfg.min_box_size), ToPlain()]
    return v2.Compose(steps)


def make_sample(image: torch.Tensor, boxes, labels) -> tuple:
    """uint8 (3, H, W) image + (N, 4) boxes + (N,) labels -> the transforms' input sample."""
    h, w = image.shape[-2:]
    return tv_tensors.Image(image), {
        "boxes": tv_tensors.BoundingBoxes(torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                                          format="XYXY", canvas_size=(h, w)),
        "labels": torch.as_tensor(labels, dtype=torch.int64).reshape(-1)}


def det_collate(items: list):
    """Items the dataset could load -> (images (B, 3, S, S), [target dicts]); None if none could."""
    items = [it for it in items if it is not None]
    if not items:
        return None
    return torch.stack([im for im, _ in items]), [t for _, t in items]


def preprocess_meta(cfg: DetDataConfig) -> dict:
    return {"size": [cfg.size, cfg.size], "mean": list(cfg.mean), "std": list(cfg.std),
            "letterbox": cfg.letterbox}


def stride_shape(h: int, w: int, pre: dict) -> tuple[int, int]:
    """Network input (height, width) of an h x w image under a dynamic-HW preprocess (`pre["stride"]`):
    letterboxed so the long side is the configured size, each side padded up to a multiple of the
    stride and to at least `pre["min_size"]`."""
    stride, floor = int(pre["stride"]), int(pre.get("min_size", 0))
    nh, nw = resize_params(h, w, pre["size"][0], True)
    return tuple(max(floor, -(-n // stride) * stride) for n in (nh, nw))


def preprocess(image: torch.Tensor, pre: dict, pad_to: tuple[int, int] | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Inference preprocessing from `meta["preprocess"]`: uint8 (3, H, W) -> (float (3, S, S), scale (2,)).

    With `pre["stride"]` (a dynamic-HW export) and letterboxing, the output is (3, h, w) of
    `stride_shape`, or padded (right/bottom) to `pad_to` when given (a batch's common size).
    Boxes predicted on the output map back to the original image by `boxes / scale.repeat(2)`.
    """
    if pre.get("stride") and pre["letterbox"]:
        h, w = image.shape[-2:]
        nh, nw = resize_params(h, w, pre["size"][0], True)
        ph, pw = pad_to or stride_shape(h, w, pre)
        img = TF.pad(TF.resize(image, [nh, nw], antialias=True), [0, 0, pw - nw, ph - nh], fill=0)
        img = TF.normalize(TF.to_dtype(img, torch.float32, scale=True), list(pre["mean"]), list(pre["std"]))
        return img, torch.tensor([nw / w, nh / h], dtype=torch.float32)
    cfg = DetDataConfig(size=pre["size"][0], letterbox=pre["letterbox"], mean=pre["mean"], std=pre["std"])
    img, target = build_transforms(cfg, train=False)(*make_sample(image, torch.zeros(0, 4), []))
    return img, target["scale"]


def unscale(boxes: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Network-input pixels -> original image pixels (the eval resize pads right/bottom only)."""
    return boxes / scale.to(boxes).repeat(2)
