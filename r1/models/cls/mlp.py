"""A plain MLP classifier: the smallest baseline, and a BatchNorm-free model whose gradients do
not depend on how a batch is split (used to check accumulation and DDP equivalence)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from r1.models.cls.config import MLPConfig
from r1.registry import register_model


class MLPClassifier(nn.Module):
    """`model(images)` -> logits (B, num_classes); `model(images, labels)` -> {"ce": loss}."""

    def __init__(self, cfg: MLPConfig):
        super().__init__()
        layers, width = [nn.Flatten()], cfg.in_features
        for _ in range(cfg.depth):
            layers += [nn.Linear(width, cfg.hidden), nn.GELU(), nn.Dropout(cfg.dropout)]
            width = cfg.hidden
        layers.append(nn.Linear(width, cfg.num_classes))
        self.net = nn.Sequential(*layers)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"ce": F.cross_entropy(logits, labels)}

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None):
        logits = self.net(images)  # (B, C, H, W) -> (B, num_classes)
        return logits if labels is None else self.loss(logits, labels)


@register_model("mlp", family="cls", config=MLPConfig)
def mlp(cfg: MLPConfig) -> nn.Module:
    """Plain MLP classifier (baseline; BatchNorm-free)."""
    return MLPClassifier(cfg)
