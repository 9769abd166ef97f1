"""Image classification: config classes of its models and datasets (no torch imports here)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from r1.config import DataConfig, ModelConfig, opt, variant
from r1.errors import ConfigError

RESNET_DEPTHS = (10, 18, 34, 50)

# `data.augment` policies (built in r1/models/cls/data.py from torchvision.transforms.v2); join with '+'.
AUGMENT_POLICIES = {
    "none": "no augmentation",
    "basic": "the dataset's geometric default (digits: pad + random crop shifts; imagefolder: random resized "
             "crop + horizontal flip)",
    "rotation": "random rotation within +-15 degrees",
    "grayscale": "grayscale with probability 0.2",
    "equalize": "histogram equalisation with probability 0.5",
    "colorjitter": "brightness/contrast/saturation 0.4, hue 0.1",
    "randaugment": "RandAugment (2 ops, magnitude 9)",
    "trivialaugment": "TrivialAugmentWide (1 op, random magnitude)",
    "autoaugment": "AutoAugment, ImageNet policy",
    "cutmix": "CutMix with a random partner image (alpha 1; soft targets)",
    "mixup": "MixUp with a random partner image (alpha 0.2; soft targets)",
}
AUGMENT_HELP = ("Training augmentation policy: one name or several joined with '+' (e.g. basic+rotation+mixup); "
                "true = basic, false = none. Names: " + ", ".join(AUGMENT_POLICIES) + ".")


def parse_augment(value: Any, key: str, policies: dict = AUGMENT_POLICIES, unsupported: dict | None = None) -> str:
    """`data.augment` -> its canonical policy string ('none' or names joined by '+', in the order of
    `policies`); ConfigError naming `key` for anything else. `unsupported`: names a family cannot apply ->
    why, completing "'<name>' is not available ..." (e.g. "for detection: ...")."""
    allowed = ", ".join(policies)
    if isinstance(value, bool):
        return "basic" if value else "none"
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{key}: expected a policy name (or names joined by '+'), true or false, got {value!r}; "
                          f"allowed: {allowed}")
    names = [n.strip().lower() for n in value.split("+")]
    for n in names:
        if n in (unsupported or {}):
            raise ConfigError(f"{key}: {n!r} is not available {unsupported[n]}; allowed: {allowed}")
        if n not in policies:
            raise ConfigError(f"{key}: unknown augmentation policy {n!r}; allowed: {allowed} (join several with '+')")
    if "none" in names and len(set(names)) > 1:
        raise ConfigError(f"{key}: 'none' cannot be combined with other policies, got {value!r}")
    return "+".join(n for n in policies if n in names)


def augment_names(value: Any, key: str = "data.augment") -> list[str]:
    """The policy names `data.augment` asks for ([] for none)."""
    canonical = parse_augment(value, key)
    return [] if canonical == "none" else canonical.split("+")


GROUP_HELP = ("Keep exact and near-duplicate images (the rule `r1 data inspect` reports them by: same pixels, or "
              "dHash within 4 bits and grey thumbnails that agree) together in one split of the seeded split, so "
              "val/test never score a copy of a training image. false: the plain seeded split (what runs made "
              "before this option used; the shipped digits configs set true).")


@dataclass
class MobileNetV3Config(ModelConfig):
    arch: str = opt("small", "Block table from the MobileNetV3 paper.", choices=("small", "large"))
    width: float = opt(1.0, "Width multiplier applied to every layer's channels.", min=0.1, max=4.0)
    stem_stride: int = opt(2, "Stride of the first conv (1 keeps detail on small inputs such as 32x32).",
                           choices=(1, 2))
    in_chans: int = opt(3, "Input channels.", min=1)
    head_dim: int = opt(1024, "Hidden size of the classifier head.", min=1)
    exp_channels: list[int] = opt([], "Expansion channels per block (set by pruning). Empty: paper table x width.")
    last_channels: int = opt(0, "Channels of the last 1x1 conv (set by pruning). 0: paper table x width.", min=0)
    dropout: float = opt(0.2, "Dropout before the last linear layer.", min=0.0, max=1.0)
    label_smoothing: float = opt(0.0, "Label smoothing of the cross-entropy loss.", min=0.0, max=1.0)


MOBILENETV3_FLAVORS = {  # shared with the slimmable variant
    "tiny": {"arch": "small", "width": 0.5, "head_dim": 256},
    "small": {"arch": "small", "width": 1.0, "head_dim": 1024},
    "base": {"arch": "large", "width": 1.0, "head_dim": 1280},
}


@dataclass
class SlimConfig(MobileNetV3Config):
    widths: list[float] = opt([1.0, 0.75, 0.5], "Widths trained together (fractions of the switchable channels).")
    active_width: float = opt(1.0, "Width used for evaluation and inference; one of `widths`.", min=0.05, max=1.0)
    inplace_kd_temperature: float = opt(1.0, "Temperature of the widest-to-narrower distillation.", min=0.1)

    def validate(self, prefix: str) -> None:
        if not self.widths or max(self.widths) != 1.0 or any(not 0 < w <= 1 for w in self.widths):
            raise ConfigError(f"{prefix}.widths: expected fractions in (0, 1] including 1.0, got {self.widths}")
        if self.active_width not in self.widths:
            raise ConfigError(f"{prefix}.active_width: {self.active_width} is not one of widths {self.widths}")


@dataclass
class MLPConfig(ModelConfig):
    in_features: int = opt(3 * 32 * 32, "Flattened input size (channels x height x width).", min=1)
    hidden: int = opt(256, "Hidden units per layer.", min=1)
    depth: int = opt(2, "Hidden layers.", min=1)
    dropout: float = opt(0.0, "Dropout after each hidden layer.", min=0.0, max=1.0)


MLP_FLAVORS = {"tiny": {"hidden": 64, "depth": 1}, "small": {"hidden": 256, "depth": 2}}


@dataclass
class ResNetConfig(ModelConfig):
    depth: int = opt(18, "ResNet depth.", choices=RESNET_DEPTHS)
    small_input: bool = opt(False, "3x3 stride-1 stem and no max-pool, for inputs of ~32x32.")
    label_smoothing: float = opt(0.0, "Label smoothing of the cross-entropy loss.", min=0.0, max=1.0)


RESNET_FLAVORS = {"tiny": {"depth": 10}, "small": {"depth": 18}, "base": {"depth": 34}, "large": {"depth": 50}}


@dataclass
class DigitsConfig(DataConfig):
    name: str = opt("digits", "Dataset kind.")
    img_size: int = opt(32, "Side of the (square) upscaled digit images.", min=8)
    val_frac: float = opt(0.15, "Share of the 1,797 digits held out for validation.", min=0.05, max=0.5)
    test_frac: float = opt(0.15, "Share held out for testing.", min=0.05, max=0.5)
    split_seed: int = opt(0, "Seed of the fixed train/val/test split (independent of run.seed).", min=0)
    group_duplicates: bool = opt(False, GROUP_HELP)
    augment: Any = opt("basic", AUGMENT_HELP)
    balance: str = opt("none", "Class balancing: none, sampler (draw items by inverse class frequency) or loss "
                       "(class-weighted cross-entropy).", choices=("none", "sampler", "loss"))

    def validate(self, prefix: str) -> None:
        self.augment = parse_augment(self.augment, f"{prefix}.augment")


@dataclass
class ImageFolderConfig(DataConfig):
    name: str = opt("imagefolder", "Dataset kind.")
    root: str = opt("", "Directory with one sub-directory per class, or train/ val/ [test/] splits of that.")
    img_size: int = opt(224, "Images are resized to img_size x img_size.", min=8)
    val_frac: float = opt(0.15, "Validation share when root has no val/ split.", min=0.0, max=0.5)
    test_frac: float = opt(0.15, "Test share when root has no test/ split.", min=0.0, max=0.5)
    split_seed: int = opt(0, "Seed of the train/val/test split when root is not pre-split.", min=0)
    group_duplicates: bool = opt(False, GROUP_HELP + " Reads every image once more (a pre-split root is "
                                 "used as it is: `r1 data inspect ROOT` lists its cross-split duplicates).")
    augment: Any = opt("basic", AUGMENT_HELP)
    balance: str = opt("none", "Class balancing: none, sampler (draw items by inverse class frequency) or loss "
                       "(class-weighted cross-entropy).", choices=("none", "sampler", "loss"))

    def validate(self, prefix: str) -> None:
        self.augment = parse_augment(self.augment, f"{prefix}.augment")


variant(ModelConfig, "r1_mobilenetv3", flavors=MOBILENETV3_FLAVORS)(MobileNetV3Config)
variant(ModelConfig, "r1_slim_mobilenetv3", flavors=MOBILENETV3_FLAVORS)(SlimConfig)
variant(ModelConfig, "mlp", flavors=MLP_FLAVORS)(MLPConfig)
variant(ModelConfig, "resnet", flavors=RESNET_FLAVORS)(ResNetConfig)
variant(DataConfig, "digits")(DigitsConfig)
variant(DataConfig, "imagefolder")(ImageFolderConfig)
