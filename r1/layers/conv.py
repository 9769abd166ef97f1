"""Convolution blocks: conv-bn-act, squeeze-excitation, MobileNetV3 inverted residual."""
from __future__ import annotations

import torch
import torch.nn as nn

ACTIVATIONS = {"relu": nn.ReLU, "hswish": nn.Hardswish, "silu": nn.SiLU, "none": nn.Identity}


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round channels to a multiple of `divisor`, never dropping more than 10% below `value`."""
    min_value = min_value or divisor
    out = max(min_value, int(value + divisor / 2) // divisor * divisor)
    return out + divisor if out < 0.9 * value else out


class ConvBNAct(nn.Sequential):
    """Conv2d (no bias) -> BatchNorm2d -> activation; `groups=in_ch` makes it depthwise."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1, groups: int = 1,
                 act: str = "relu"):
        super().__init__(
            nn.Conv2d(in_ch, out_ch, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out_ch),
            ACTIVATIONS[act](inplace=True) if act != "none" else nn.Identity(),
        )
        self.out_channels = out_ch


class SqueezeExcite(nn.Module):
    """Channel attention: global pool -> reduce -> ReLU -> expand -> hard-sigmoid gate."""

    def __init__(self, channels: int, reduction: int = 4, hidden: int = 0):
        super().__init__()
        hidden = hidden or make_divisible(channels / reduction)
        self.reduce = nn.Conv2d(channels, hidden, 1)
        self.expand = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)  # (B, C, H, W) -> (B, C, 1, 1)
        s = self.expand(torch.relu(self.reduce(s)))
        return x * nn.functional.hardsigmoid(s)


class InvertedResidual(nn.Module):
    """MobileNetV3 block: 1x1 expand -> kxk depthwise (stride) -> SE -> 1x1 project (+ skip).

    `se_hidden` pins the SE bottleneck so pruning the expansion channels leaves it unchanged."""

    def __init__(self, in_ch: int, exp_ch: int, out_ch: int, kernel: int, stride: int, se: bool, act: str,
                 se_hidden: int = 0):
        super().__init__()
        self.use_skip = stride == 1 and in_ch == out_ch
        layers: list[nn.Module] = []
        if exp_ch != in_ch:
            layers.append(ConvBNAct(in_ch, exp_ch, 1, act=act))
        layers.append(ConvBNAct(exp_ch, exp_ch, kernel, stride, groups=exp_ch, act=act))
        if se:
            layers.append(SqueezeExcite(exp_ch, hidden=se_hidden))
        layers.append(ConvBNAct(exp_ch, out_ch, 1, act="none"))
        self.block = nn.Sequential(*layers)
        self.out_channels = out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.use_skip else y
