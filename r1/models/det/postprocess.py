"""Detections from raw head outputs: score threshold, top-k per level, batched NMS, max detections."""
from __future__ import annotations

import torch
from torchvision.ops import batched_nms, clip_boxes_to_image


def postprocess(cls_logits: torch.Tensor, boxes: torch.Tensor, per_level: list[int],
                image_size: tuple[int, int], score_thresh: float = 0.05, topk: int = 1000,
                nms_iou: float = 0.5, max_det: int = 100) -> list[dict[str, torch.Tensor]]:
    """cls_logits (B, A, K), boxes (B, A, 4) decoded x1y1x2y2 -> per image {"boxes", "scores", "labels"}.

    `per_level` gives how many of the A anchors belong to each pyramid level, in order.
    Labels are 0-based class indices.
    """
    num_classes = cls_logits.shape[-1]
    out = []
    for logits_i, boxes_i in zip(cls_logits, boxes):
        keep_boxes, keep_scores, keep_labels = [], [], []
        for lvl_logits, lvl_boxes in zip(logits_i.split(per_level), boxes_i.split(per_level)):
            scores = torch.sigmoid(lvl_logits).flatten()  # (A_l * K,)
            idx = torch.nonzero(scores > score_thresh).squeeze(1)
            scores = scores[idx]
            if scores.numel() > topk:
                scores, order = scores.topk(topk)
                idx = idx[order]
            anchor_idx = torch.div(idx, num_classes, rounding_mode="floor")
            keep_boxes.append(lvl_boxes[anchor_idx])
            keep_scores.append(scores)
            keep_labels.append(idx % num_classes)
        b = clip_boxes_to_image(torch.cat(keep_boxes), image_size)
        s, lab = torch.cat(keep_scores), torch.cat(keep_labels)
        keep = batched_nms(b, s, lab, nms_iou)[:max_det]
        out.append({"boxes": b[keep], "scores": s[keep], "labels": lab[keep]})
    return out
