"""Anchor assignment: ATSS (adaptive training sample selection) and max-IoU matching.

Both return `matched (A,)` int64: index of the assigned ground-truth box, -1 for background,
-2 for anchors to ignore (max-IoU's grey zone only).
"""
from __future__ import annotations

import torch
from torchvision.ops import box_iou

BACKGROUND, IGNORE = -1, -2


def _centres(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[:, :2] + boxes[:, 2:]) / 2


def atss_assign(anchors: torch.Tensor, per_level: list[int], gt: torch.Tensor, topk: int = 9,
                eps: float = 0.01) -> torch.Tensor:
    """ATSS (Zhang et al. 2020).

    anchors (A, 4) concatenated over levels (`per_level` counts per level), gt (G, 4).
    For each gt: the `topk` anchors nearest by centre distance on every level are candidates;
    those with IoU >= mean + std of the candidates' IoUs and whose centre lies inside the box are
    positives. An anchor positive for several boxes goes to the one it overlaps most.
    """
    num_anchors = anchors.shape[0]
    matched = torch.full((num_anchors,), BACKGROUND, dtype=torch.long, device=anchors.device)
    if gt.numel() == 0:
        return matched
    ious = box_iou(anchors, gt)  # (A, G)
    dist = torch.cdist(_centres(anchors), _centres(gt))  # (A, G)
    candidates, start = [], 0
    for n in per_level:
        k = min(topk, n)
        _, idx = dist[start:start + n].topk(k, dim=0, largest=False)  # (k, G)
        candidates.append(idx + start)
        start += n
    cand = torch.cat(candidates, dim=0)  # (K, G) anchor indices
    cand_iou = ious.gather(0, cand)  # (K, G)
    # A single candidate has no spread: std is 0 then (torch gives NaN for one sample).
    std = cand_iou.std(dim=0) if cand.shape[0] > 1 else torch.zeros_like(cand_iou[0])
    thresh = cand_iou.mean(dim=0) + std  # (G,)
    positive = cand_iou >= thresh[None, :]
    # centre of the candidate anchor strictly inside the gt box
    centres = _centres(anchors)[cand]  # (K, G, 2)
    inside = torch.stack([centres[..., 0] - gt[None, :, 0], centres[..., 1] - gt[None, :, 1],
                          gt[None, :, 2] - centres[..., 0], gt[None, :, 3] - centres[..., 1]],
                         dim=-1).amin(dim=-1) > eps
    positive &= inside
    score = torch.full_like(ious, -1.0)  # IoU where (anchor, gt) is a positive pair, else -1
    g_idx = torch.arange(gt.shape[0], device=gt.device).expand_as(cand)
    score[cand[positive], g_idx[positive]] = ious[cand[positive], g_idx[positive]]
    best, arg = score.max(dim=1)
    matched[best >= 0] = arg[best >= 0]
    return matched


def max_iou_assign(anchors: torch.Tensor, gt: torch.Tensor, pos_iou: float = 0.5, neg_iou: float = 0.4,
                   allow_low_quality: bool = True) -> torch.Tensor:
    """RetinaNet matching: IoU >= pos_iou positive, < neg_iou background, between ignored.

    With `allow_low_quality`, every gt also keeps the anchor(s) that overlap it most.
    """
    matched = torch.full((anchors.shape[0],), BACKGROUND, dtype=torch.long, device=anchors.device)
    if gt.numel() == 0:
        return matched
    ious = box_iou(anchors, gt)  # (A, G)
    best, arg = ious.max(dim=1)
    matched[best >= neg_iou] = IGNORE
    matched[best >= pos_iou] = arg[best >= pos_iou]
    if allow_low_quality:
        best_per_gt = ious.max(dim=0).values  # (G,)
        a_idx, _ = torch.nonzero((ious == best_per_gt[None, :]) & (best_per_gt[None, :] > 0), as_tuple=True)
        matched[a_idx] = arg[a_idx]
    return matched
