"""Detection: config classes of its models and datasets (no torch imports here)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from r1.config import DataConfig, ModelConfig, opt, variant
from r1.errors import ConfigError
from r1.models.cls.config import parse_augment

# `data.augment` policies of detection (built in r1/models/det/transforms.py and r1/models/det/mix.py from
# torchvision.transforms.v2, boxes transformed with the image); join with '+', as for classification.
DET_AUGMENT_POLICIES = {
    "none": "no augmentation: the evaluation resize only",
    "basic": "the fixed keys: data.photometric, zoom_out, iou_crop, hflip, scale_range (multi-scale + crop)",
    "rotation": "random rotation within +-15 degrees (each box: the box around its rotated corners)",
    "vflip": "vertical flip with probability 0.5 (top-down imagery: cells, aerial)",
    "grayscale": "grayscale with probability 0.2",
    "equalize": "histogram equalisation with probability 0.5",
    "colorjitter": "brightness/contrast/saturation 0.4, hue 0.1",
    "mosaic": "4 training images in a 2x2 mosaic around a random centre (data.mosaic_prob of the items), "
              "off for the last data.close_mosaic epochs",
    "mixup": "YOLO-style MixUp: blend with another training item, ratio ~ Beta(32, 32), boxes of both "
             "(data.mixup_prob of the items), off for the last data.close_mosaic epochs",
}
# torchvision 0.29's v2 auto-augment transforms raise TypeError on BoundingBoxes inputs
# (`_AutoAugmentBase._flatten_and_extract_image_or_video`); CutMix/MixUp (v2) mix labels, not boxes.
DET_UNSUPPORTED = {n: "for detection: torchvision's v2 version rejects bounding boxes" for n in
                   ("randaugment", "trivialaugment", "autoaugment", "augmix")}
DET_UNSUPPORTED["cutmix"] = "for detection: it mixes class labels, not boxes (use mosaic)"
DET_AUGMENT_HELP = ("Training augmentation policy: one name or several joined with '+' (e.g. basic+mosaic+mixup); "
                    "true = basic, false = none. Names: " + ", ".join(DET_AUGMENT_POLICIES) + ".")


def parse_det_augment(value: Any, key: str) -> str:
    """`data.augment` of a detection dataset -> its canonical string ('none' or names joined by '+',
    in table order); ConfigError naming `key` for anything else (cls's parser over this table)."""
    return parse_augment(value, key, DET_AUGMENT_POLICIES, DET_UNSUPPORTED)


def det_augment_names(value: Any, key: str = "data.augment") -> list[str]:
    """The policy names `data.augment` asks for ([] for none)."""
    canonical = parse_det_augment(value, key)
    return [] if canonical == "none" else canonical.split("+")


@dataclass
class R1DetConfig(ModelConfig):
    arch: str = opt("small", "Backbone block table (MobileNetV3 paper).", choices=("small", "large"))
    width: float = opt(1.0, "Backbone width multiplier.", min=0.1, max=4.0)
    exp_channels: list[int] = opt([], "Backbone expansion channels per block (set by pruning). Empty: table x width.")
    levels: list[int] = opt([3, 4, 5], "Pyramid levels, stride 2**l, contiguous within 2..7 "
                            "(2: small objects; 6, 7: extra stride-2 convs for large ones).")
    fpn_channels: int = opt(64, "Channels of every pyramid level and of the head.", min=8)
    head_convs: int = opt(2, "Conv layers in each head branch (cls and box) before the output conv.", min=0)
    depthwise: bool = opt(True, "Depthwise-separable head convs (3x3 depthwise + 1x1) instead of full 3x3.")
    anchor_size: float = opt(4.0, "Anchor base size as a multiple of its level's stride.", min=0.5)
    anchor_scales: list[float] = opt([1.0, 1.26, 1.587], "Anchor scales per location (times the base size).")
    anchor_ratios: list[float] = opt([0.5, 1.0, 2.0], "Anchor aspect ratios (height / width) per location.")
    assigner: str = opt("atss", "Anchor assignment.", choices=("atss", "maxiou"))
    atss_topk: int = opt(9, "ATSS: candidate anchors per level and box, nearest by centre distance.", min=1)
    pos_iou: float = opt(0.5, "maxiou: IoU at or above which an anchor is positive.", min=0.0, max=1.0)
    neg_iou: float = opt(0.4, "maxiou: IoU below which an anchor is background (between: ignored).",
                         min=0.0, max=1.0)
    box_loss: str = opt("giou", "Box regression loss.", choices=("giou", "smooth_l1"))
    box_weight: float = opt(2.0, "Weight of the box loss against the focal loss.", min=0.0)
    focal_alpha: float = opt(0.25, "Focal loss alpha (weight of positives).", min=0.0, max=1.0)
    focal_gamma: float = opt(2.0, "Focal loss gamma (down-weighting of easy examples).", min=0.0)
    score_thresh: float = opt(0.05, "Post-process: drop detections scoring below this.", min=0.0, max=1.0)
    topk: int = opt(1000, "Post-process: best candidates kept per level before NMS.", min=1)
    nms_iou: float = opt(0.5, "Post-process: IoU above which NMS suppresses a same-class box.", min=0.0, max=1.0)
    max_det: int = opt(100, "Post-process: detections kept per image.", min=1)
    input_size: int = opt(320, "Nominal square input size, used for FLOP counts only.", min=32)

    def validate(self, prefix: str) -> None:
        lv = self.levels
        if not lv or lv != list(range(lv[0], lv[0] + len(lv))) or lv[0] < 2 or lv[-1] > 7 or lv[0] > 5:
            raise ConfigError(f"{prefix}.levels: expected contiguous ascending levels within 2..7 "
                              f"starting at 5 or below, got {lv}")
        if not self.anchor_scales or not self.anchor_ratios or min(self.anchor_scales + self.anchor_ratios) <= 0:
            raise ConfigError(f"{prefix}.anchor_scales/anchor_ratios: expected non-empty lists of positive numbers")
        if self.neg_iou > self.pos_iou:
            raise ConfigError(f"{prefix}.neg_iou: must not exceed pos_iou ({self.pos_iou})")


R1DET_FLAVORS = {
    "tiny": {"arch": "small", "width": 0.5, "fpn_channels": 32, "head_convs": 1, "depthwise": True},
    "small": {"arch": "small", "width": 1.0, "fpn_channels": 64, "head_convs": 2, "depthwise": True},
    "base": {"arch": "large", "width": 1.0, "fpn_channels": 96, "head_convs": 3, "depthwise": False},
}


@dataclass
class TVDetConfig(ModelConfig):
    width: float = opt(1.0, "Width multiplier of torchvision's MobileNetV3-Large backbone.", min=0.1, max=4.0)
    fpn_channels: int = opt(256, "FPN / head channels (RetinaNet, FCOS).", min=8)
    score_thresh: float = opt(0.05, "Post-process: drop detections scoring below this.", min=0.0, max=1.0)
    nms_iou: float = opt(0.5, "Post-process: NMS IoU threshold.", min=0.0, max=1.0)
    max_det: int = opt(100, "Post-process: detections kept per image.", min=1)
    input_size: int = opt(320, "Nominal square input size, used for FLOP counts only.", min=32)


TVDET_FLAVORS = {"tiny": {"width": 0.5, "fpn_channels": 64}, "small": {"width": 1.0, "fpn_channels": 128},
                 "base": {"width": 1.0, "fpn_channels": 256}}


SSDLITE_FLAVORS = {
    "tiny": {"width": 0.5}, "small": {"width": 1.0}, "base": {"width": 1.5}}  # small: torchvision's SSDlite320


@dataclass
class DetDataConfig(DataConfig):
    """Fields every detection dataset shares: input size, normalisation, augmentation."""

    batch_size: int = opt(16, "Global training batch (split across processes under torchrun).", min=1)
    eval_batch_size: int = opt(16, "Batch size for evaluation.", min=1)
    size: int = opt(320, "Network input is size x size pixels.", min=32)
    letterbox: bool = opt(True, "Keep the aspect ratio and pad (right/bottom); false: stretch to size x size.")
    mean: list[float] = opt([0.485, 0.456, 0.406], "Per-channel mean for normalisation (0-1 scale).")
    std: list[float] = opt([0.229, 0.224, 0.225], "Per-channel std for normalisation (0-1 scale).")
    hflip: float = opt(0.5, "Probability of a horizontal flip (training).", min=0.0, max=1.0)
    scale_range: list[float] = opt([0.75, 1.25], "Multi-scale training: the image is resized to size * s, "
                                   "s uniform in this range, then padded / cropped to size. [1, 1]: off.")
    photometric: bool = opt(True, "Random brightness / contrast / saturation / hue / channel order (training).")
    iou_crop: bool = opt(False, "SSD-style random IoU crop, applied to half of the training images.")
    zoom_out: float = opt(1.0, "SSD-style zoom out up to this factor (canvas filled with the mean) on half "
                          "of the training images. 1: off.", min=1.0)
    augment: Any = opt("basic", DET_AUGMENT_HELP)
    mosaic_prob: float = opt(1.0, "augment=...+mosaic: share of the training items built as a 4-image mosaic.",
                             min=0.0, max=1.0)
    mixup_prob: float = opt(0.3, "augment=...+mixup: share of the training items blended with another one.",
                            min=0.0, max=1.0)
    close_mosaic: float = opt(0.1, "Mosaic and mixup are off for the last epochs of a run (as Ultralytics' "
                              "close_mosaic): >= 1: that many epochs; below 1: that share of the run's epochs.",
                              min=0.0)
    min_box_size: float = opt(1.0, "Boxes narrower or shorter than this (pixels, after transforms) are dropped.",
                              min=0.0)
    classes: list[str] = opt([], "Class names in training-index order. Empty: taken from the data.")

    def validate(self, prefix: str) -> None:
        lo_hi = self.scale_range
        if len(lo_hi) != 2 or not 0 < lo_hi[0] <= lo_hi[1]:
            raise ConfigError(f"{prefix}.scale_range: expected [lo, hi] with 0 < lo <= hi, got {lo_hi}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ConfigError(f"{prefix}.mean/std: expected 3 numbers each (std > 0)")
        self.augment = parse_det_augment(self.augment, f"{prefix}.augment")


@dataclass
class VOCLocation:
    """Where a VOC dataset lies (the det `voc` kind and the mm `vqa_voc` kind)."""

    root: str = opt("", "VOC root holding Annotations/, ImageSets/Main/<split>.txt and JPEGImages/.")
    train_split: str = opt("train", "ImageSets/Main/<name>.txt listing the training images.")
    val_split: str = opt("val", "Split used for validation.")
    test_split: str = opt("test", "Split used for testing. Empty: no test split.")


@dataclass
class COCOLocation:
    """Where a COCO dataset lies (the det `coco` kind and the mm `vqa_coco` kind)."""

    root: str = opt("", "Base directory for the relative paths below (may be empty); a root written by "
                        "`r1 data convert voc2coco` needs nothing else.")
    train_images: str = opt("train2017", "Training images directory.")
    train_ann: str = opt("annotations/instances_train2017.json", "Training annotation file (COCO JSON).")
    val_images: str = opt("val2017", "Validation images directory.")
    val_ann: str = opt("annotations/instances_val2017.json", "Validation annotation file.")
    test_images: str = opt("", "Test images directory. Empty: no test split.")
    test_ann: str = opt("", "Test annotation file.")


@dataclass
class VOCConfig(VOCLocation, DetDataConfig):
    name: str = opt("voc", "Dataset kind.")
    skip_difficult: bool = opt(False, "Drop objects marked <difficult>1</difficult>.")


@dataclass
class COCOConfig(COCOLocation, DetDataConfig):
    name: str = opt("coco", "Dataset kind.")


@dataclass
class DigitScenesConfig(DetDataConfig):
    name: str = opt("det_digits", "Dataset kind.")
    size: int = opt(128, "Network input is size x size pixels.", min=32)
    canvas: int = opt(128, "Side of the generated square canvas.", min=32)
    num_train: int = opt(4000, "Generated training scenes.", min=1)
    num_val: int = opt(300, "Generated validation scenes.", min=1)
    num_test: int = opt(300, "Generated test scenes.", min=1)
    digits_min: int = opt(1, "Fewest digits per scene.", min=0)
    digits_max: int = opt(5, "Most digits per scene.", min=1)
    digit_min: int = opt(16, "Smallest pasted digit side, pixels.", min=4)
    digit_max: int = opt(44, "Largest pasted digit side, pixels.", min=4)
    hflip: float = opt(0.0, "Probability of a horizontal flip (training). Off: mirrored digits change meaning.",
                       min=0.0, max=1.0)
    scale_range: list[float] = opt([0.85, 1.15], "Multi-scale training range (see voc).")
    split_seed: int = opt(0, "Seed of the scenes and of the split of the 1,797 source digits into "
                          "train (70%) / val (15%) / test (15%) writers' samples.", min=0)


variant(ModelConfig, "r1_det", flavors=R1DET_FLAVORS)(R1DetConfig)
variant(ModelConfig, "tv_retinanet_mnv3", flavors=TVDET_FLAVORS)(TVDetConfig)
variant(ModelConfig, "tv_fcos_mnv3", flavors=TVDET_FLAVORS)(TVDetConfig)
variant(ModelConfig, "tv_ssdlite320", flavors=SSDLITE_FLAVORS)(TVDetConfig)
variant(DataConfig, "voc")(VOCConfig)
variant(DataConfig, "coco")(COCOConfig)
variant(DataConfig, "det_digits")(DigitScenesConfig)
