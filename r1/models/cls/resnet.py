"""ResNet teacher: torchvision's architecture, random init or weights from a local file."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from r1.models.cls.config import RESNET_DEPTHS, ResNetConfig
from r1.registry import register_model

DEPTHS = {10: (BasicBlock, [1, 1, 1, 1]), 18: (BasicBlock, [2, 2, 2, 2]),
          34: (BasicBlock, [3, 4, 6, 3]), 50: (Bottleneck, [3, 4, 6, 3])}
assert tuple(DEPTHS) == RESNET_DEPTHS  # the config's allowed depths


class ResNetClassifier(nn.Module):
    """`model(images)` -> logits (B, num_classes); `model(images, labels)` -> {"ce": loss}."""

    def __init__(self, cfg: ResNetConfig):
        super().__init__()
        block, layers = DEPTHS[cfg.depth]
        self.net = ResNet(block, layers, num_classes=cfg.num_classes)
        if cfg.small_input:
            self.net.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
            self.net.maxpool = nn.Identity()
        self.label_smoothing = cfg.label_smoothing

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"ce": F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)}

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None):
        logits = self.net(images)
        return logits if labels is None else self.loss(logits, labels)


@register_model("resnet", family="cls", config=ResNetConfig)
def resnet(cfg: ResNetConfig) -> nn.Module:
    """ResNet classifier (the teacher), torchvision's architecture."""
    return ResNetClassifier(cfg)
