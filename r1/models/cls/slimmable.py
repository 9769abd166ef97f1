"""Width-switchable (slimmable) R1 MobileNetV3: one set of weights, several widths.

The switchable channels are the ones pruning may remove (`r1.compress.prune`): the expansion
channels of every inverted residual, the last 1x1 conv and the classifier's hidden units. At width
r each group keeps its first make_divisible(r * C) channels; the rest are masked to zero, which
equals slicing them away (tested against the sliced network). Batch norms in those groups keep one
set of statistics per width (switchable BN). A training step runs every width: the widest learns
from the labels, each narrower one distils from the widest's predictions in the same step.
`materialize(model, r)` returns a plain R1 MobileNetV3 of that width for export and serving.
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn

from r1.compress.distill import kd_loss
from r1.compress.prune import _groups, apply_plan
from r1.layers import make_divisible
from r1.models.cls.config import SlimConfig
from r1.models.cls.mobilenetv3 import MobileNetV3Config, R1MobileNetV3
from r1.registry import register_model


class _Width:
    """Shared, deep-copy-safe switch read by every masked module."""

    def __init__(self, widths: list[float], active: float):
        self.widths, self.active = sorted(widths, reverse=True), active

    @property
    def index(self) -> int:
        return self.widths.index(self.active)


def kept(channels: int, width: float) -> int:
    return min(channels, make_divisible(channels * width))


class _Masked(nn.Module):
    """Runs `inner`, then zeroes channels past the active width's share of `channels`."""

    def __init__(self, inner: nn.Module, channels: int, switch: _Width):
        super().__init__()
        self.inner, self.channels, self.switch = inner, channels, switch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.inner(x)
        k = kept(self.channels, self.switch.active)
        if k == self.channels:
            return y
        mask = torch.zeros(self.channels, dtype=y.dtype, device=y.device)
        mask[:k] = 1
        return y * mask.view(1, -1, *([1] * (y.dim() - 2)))


class _SwitchableBN(nn.Module):
    """One BatchNorm2d per width; the active width's is used."""

    def __init__(self, bn: nn.BatchNorm2d, switch: _Width):
        super().__init__()
        self.bns = nn.ModuleList(copy.deepcopy(bn) for _ in switch.widths)
        self.switch = switch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bns[self.switch.index](x)


class SlimMobileNetV3(nn.Module):
    """`model(images)` -> logits at the active width; `model(images, labels)` -> {"ce", "kd_w<r>"...}."""

    def __init__(self, cfg: SlimConfig):
        super().__init__()
        fields = {k: getattr(cfg, k) for k in MobileNetV3Config.__dataclass_fields__}
        base_cfg = MobileNetV3Config(**{**fields, "name": "r1_mobilenetv3"})
        self.net = R1MobileNetV3(base_cfg)
        self.net.r1_config = base_cfg
        self.switch = _Width(cfg.widths, cfg.active_width)
        self.temperature = cfg.inplace_kd_temperature
        self._make_switchable()

    def _make_switchable(self) -> None:
        net, sw = self.net, self.switch
        for group, channels in _groups(net).items():
            if group == "head":
                net.head[1] = _Masked(net.head[1], channels, sw)
                continue
            seq = net.backbone.blocks[-1] if group == "last" else None
            targets = [seq] if seq is not None else list(net.backbone.blocks[int(group[5:])].block[:2])
            for cba in targets:  # ConvBNAct: conv, bn, act
                cba[1] = _SwitchableBN(cba[1], sw)
                cba[2] = _Masked(cba[2], channels, sw)

    @property
    def widths(self) -> list[float]:
        return list(self.switch.widths)

    def at_width(self, width: float) -> nn.Module:
        """A plain model holding these weights at `width` (the pipeline's `width` stage calls this)."""
        return materialize(self, width)

    def set_width(self, width: float) -> None:
        if width not in self.switch.widths:
            raise ValueError(f"width {width} is not one of {self.switch.widths}")
        self.switch.active = width

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None):
        if labels is None:
            return self.net(images)
        active, losses = self.switch.active, {}
        try:
            for width in self.switch.widths:  # widest first: it teaches the others
                self.switch.active = width
                logits = self.net(images)
                if width == 1.0:
                    losses.update(self.net.loss(logits, labels))
                    teacher = logits.detach()
                else:
                    losses[f"kd_w{width:g}"] = kd_loss(logits, teacher, self.temperature)
        finally:
            self.switch.active = active
        return losses


def materialize(model: SlimMobileNetV3, width: float) -> R1MobileNetV3:
    """A plain R1 MobileNetV3 holding `model`'s weights at `width` (for export, serving, benchmarks)."""
    net = copy.deepcopy(model.net)
    idx = model.switch.widths.index(width)
    for _name, module in list(net.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, _SwitchableBN):
                setattr(module, child_name, child.bns[idx])
            elif isinstance(child, _Masked):
                setattr(module, child_name, child.inner)
    plan = {g: torch.arange(kept(c, width)) for g, c in _groups(net).items()}
    plain = apply_plan(net, plan)
    return plain.eval()


@register_model("r1_slim_mobilenetv3", family="cls", config=SlimConfig)
def r1_slim_mobilenetv3(cfg: SlimConfig) -> nn.Module:
    """Width-switchable R1 MobileNetV3 student (widths trained together, picked at inference)."""
    return SlimMobileNetV3(cfg)

