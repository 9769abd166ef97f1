"""R1 MobileNetV3: inverted residuals, squeeze-excitation, hard-swish, width multiplier.

The backbone (`MobileNetV3Backbone`) is shared with the detector, which reads its multi-scale
features; `R1MobileNetV3` adds the classification head.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from r1.layers import ConvBNAct, InvertedResidual, make_divisible
from r1.models.cls.config import MobileNetV3Config  # torch-free
from r1.registry import register_model

# (kernel, expansion channels, out channels, squeeze-excite, activation, stride), from the paper.
ARCHS: dict[str, list[tuple]] = {
    "small": [
        (3, 16, 16, True, "relu", 2), (3, 72, 24, False, "relu", 2), (3, 88, 24, False, "relu", 1),
        (5, 96, 40, True, "hswish", 2), (5, 240, 40, True, "hswish", 1), (5, 240, 40, True, "hswish", 1),
        (5, 120, 48, True, "hswish", 1), (5, 144, 48, True, "hswish", 1), (5, 288, 96, True, "hswish", 2),
        (5, 576, 96, True, "hswish", 1), (5, 576, 96, True, "hswish", 1),
    ],
    "large": [
        (3, 16, 16, False, "relu", 1), (3, 64, 24, False, "relu", 2), (3, 72, 24, False, "relu", 1),
        (5, 72, 40, True, "relu", 2), (5, 120, 40, True, "relu", 1), (5, 120, 40, True, "relu", 1),
        (3, 240, 80, False, "hswish", 2), (3, 200, 80, False, "hswish", 1), (3, 184, 80, False, "hswish", 1),
        (3, 184, 80, False, "hswish", 1), (3, 480, 112, True, "hswish", 1), (3, 672, 112, True, "hswish", 1),
        (5, 672, 160, True, "hswish", 2), (5, 960, 160, True, "hswish", 1), (5, 960, 160, True, "hswish", 1),
    ],
}


class MobileNetV3Backbone(nn.Module):
    """Images (B, C, H, W) -> features. `feature_info` lists (channels, stride) of each stage end."""

    def __init__(self, arch: str = "small", width: float = 1.0, stem_stride: int = 2, in_chans: int = 3,
                 exp_channels: list[int] | None = None, last_channels: int = 0):
        super().__init__()
        table = ARCHS[arch]
        if exp_channels and len(exp_channels) != len(table):
            raise ValueError(f"exp_channels: expected {len(table)} values for arch {arch}, got {len(exp_channels)}")
        stem_ch = make_divisible(16 * width)
        self.stem = ConvBNAct(in_chans, stem_ch, 3, stem_stride, act="hswish")
        blocks, in_ch, stride = [], stem_ch, stem_stride
        self.feature_info: list[tuple[int, int]] = []  # (channels, stride) after each stride change
        stage_ends: list[int] = []
        for i, (k, exp, out, se, act, s) in enumerate(table):
            if s == 2 and blocks:
                stage_ends.append(i - 1)
                self.feature_info.append((in_ch, stride))
            full_exp, out_ch = make_divisible(exp * width), make_divisible(out * width)
            exp_ch = exp_channels[i] if exp_channels else full_exp
            blocks.append(InvertedResidual(in_ch, exp_ch, out_ch, k, s, se, act,
                                           se_hidden=make_divisible(full_exp / 4)))
            in_ch, stride = out_ch, stride * s
        last_ch = last_channels or make_divisible(table[-1][1] * width)
        blocks.append(ConvBNAct(in_ch, last_ch, 1, act="hswish"))
        stage_ends.append(len(blocks) - 1)
        self.feature_info.append((last_ch, stride))
        self.blocks = nn.ModuleList(blocks)
        self.stage_ends = stage_ends
        self.out_channels = last_ch
        self.grad_ckpt = False

    def _run(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.grad_ckpt and self.training and x.requires_grad:
            return checkpoint(block, x, use_reentrant=False)
        return block(x)

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """One feature map per stage end, strides as in `feature_info` (e.g. 4, 8, 16, 32)."""
        feats, ends = [], set(self.stage_ends)
        x = self.stem(x)
        for i, block in enumerate(self.blocks):
            x = self._run(block, x)
            if i in ends:
                feats.append(x)
        return feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[-1]


class R1MobileNetV3(nn.Module):
    """Classifier. `model(images)` -> logits (B, num_classes); `model(images, labels)` -> {"ce": loss}."""

    def __init__(self, cfg: MobileNetV3Config):
        super().__init__()
        self.backbone = MobileNetV3Backbone(cfg.arch, cfg.width, cfg.stem_stride, cfg.in_chans,
                                            cfg.exp_channels, cfg.last_channels)
        self.head = nn.Sequential(
            nn.Linear(self.backbone.out_channels, cfg.head_dim), nn.Hardswish(inplace=True),
            nn.Dropout(cfg.dropout), nn.Linear(cfg.head_dim, cfg.num_classes),
        )
        self.label_smoothing = cfg.label_smoothing
        _init_weights(self)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.backbone.grad_ckpt = enable

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"ce": F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)}

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None):
        x = self.backbone(images).mean((2, 3))  # (B, C, H, W) -> (B, C)
        logits = self.head(x)
        return logits if labels is None else self.loss(logits, labels)


def _init_weights(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


@register_model("r1_mobilenetv3", family="cls", config=MobileNetV3Config)
def r1_mobilenetv3(cfg: MobileNetV3Config) -> nn.Module:
    """R1 MobileNetV3 classifier (the R1 student)."""
    return R1MobileNetV3(cfg)
