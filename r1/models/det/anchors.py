"""Anchors on an FPN grid and the box <-> delta coding the head regresses.

Boxes are (x1, y1, x2, y2) in input pixels throughout.
"""
from __future__ import annotations

import math

import torch


def cell_anchors(base: float, scales: list[float], ratios: list[float]) -> torch.Tensor:
    """(A, 4) anchors centred on (0, 0); A = len(scales) * len(ratios), ratio = h / w."""
    out = []
    for r in ratios:
        for s in scales:
            area = (base * s) ** 2
            w = math.sqrt(area / r)
            h = w * r
            out.append([-w / 2, -h / 2, w / 2, h / 2])
    return torch.tensor(out, dtype=torch.float32)


def grid_anchors(cell: torch.Tensor, stride: int, height: int, width: int) -> torch.Tensor:
    """Anchors of one level: (H * W * A, 4), ordered (y, x, a) like the head's flattened output."""
    ys = (torch.arange(height, dtype=torch.float32, device=cell.device) + 0.5) * stride
    xs = (torch.arange(width, dtype=torch.float32, device=cell.device) + 0.5) * stride
    cy, cx = torch.meshgrid(ys, xs, indexing="ij")
    centres = torch.stack([cx, cy, cx, cy], dim=-1).reshape(-1, 1, 4)  # (H*W, 1, 4)
    return (centres + cell.view(1, -1, 4)).reshape(-1, 4)


class BoxCoder:
    """Deltas (dx, dy, dw, dh) relative to an anchor, scaled by `weights` (RetinaNet style)."""

    def __init__(self, weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0),
                 clamp: float = math.log(1000.0 / 16)):
        self.weights = weights
        self.clamp = clamp

    def encode(self, boxes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        wx, wy, ww, wh = self.weights
        aw, ah = anchors[..., 2] - anchors[..., 0], anchors[..., 3] - anchors[..., 1]
        ax, ay = anchors[..., 0] + 0.5 * aw, anchors[..., 1] + 0.5 * ah
        bw, bh = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
        bx, by = boxes[..., 0] + 0.5 * bw, boxes[..., 1] + 0.5 * bh
        return torch.stack([wx * (bx - ax) / aw, wy * (by - ay) / ah,
                            ww * torch.log(bw / aw), wh * torch.log(bh / ah)], dim=-1)

    def decode(self, deltas: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        """deltas (..., 4), anchors broadcastable (..., 4) -> boxes (..., 4)."""
        wx, wy, ww, wh = self.weights
        aw, ah = anchors[..., 2] - anchors[..., 0], anchors[..., 3] - anchors[..., 1]
        ax, ay = anchors[..., 0] + 0.5 * aw, anchors[..., 1] + 0.5 * ah
        dx, dy = deltas[..., 0] / wx, deltas[..., 1] / wy
        dw = (deltas[..., 2] / ww).clamp(max=self.clamp)
        dh = (deltas[..., 3] / wh).clamp(max=self.clamp)
        cx, cy = dx * aw + ax, dy * ah + ay
        w, h = torch.exp(dw) * aw, torch.exp(dh) * ah
        return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)
