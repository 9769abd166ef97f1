"""Detector post-processing inside the ONNX graph: final boxes, fixed-size outputs with a count.

    images (B, 3, H, W) -> boxes (B, D, 4) x1y1x2y2 input pixels, scores (B, D), labels (B, D) int64,
                           num_dets (B,) int64;  D = max_det, rows >= num_dets[b] are padding
                           (boxes 0, scores 0, labels -1), valid rows sorted by score, best first.

Same result as `r1.models.det.postprocess.postprocess` (score threshold, top-k per level, per-class
NMS, max detections), written with fixed shapes so that one graph serves every batch size. The
per-class NMS is the custom op `r1::multiclass_nms`: in eager mode torchvision's `nms` per
(image, class); in the exported graph ONNX `NonMaxSuppression`, which does the batch and class
loops itself (onnxruntime, TensorRT's ONNX parser).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torchvision

OUTPUTS = ["boxes", "scores", "labels", "num_dets"]
# Written into the ONNX metadata (r1.det "outputs") for consumers other than R1.
CONTRACT = {
    "boxes": "float32 (B, max_det, 4): x1, y1, x2, y2 in input (preprocessed) pixels; 0 in padding rows",
    "scores": "float32 (B, max_det): sigmoid class score, descending; 0 in padding rows",
    "labels": "int64 (B, max_det): 0-based class index; -1 in padding rows",
    "num_dets": "int64 (B,): valid rows per image (the first num_dets[b] rows)",
}


@torch.library.custom_op("r1::multiclass_nms", mutates_args=())
def multiclass_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float,
                   score_threshold: float) -> torch.Tensor:
    """boxes (B, N, 4) x1y1x2y2, scores (B, C, N) -> kept (M, 3) int64 rows [image, class, box].

    ONNX NonMaxSuppression semantics: per image and class, boxes scoring above `score_threshold`,
    greedy NMS suppressing IoU > `iou_threshold`."""
    rows = []
    for b in range(scores.shape[0]):
        for c in range(scores.shape[1]):
            idx = torch.nonzero(scores[b, c] > score_threshold).squeeze(1)
            keep = idx[torchvision.ops.nms(boxes[b, idx], scores[b, c, idx], iou_threshold)]
            rows.append(torch.stack([torch.full_like(keep, b), torch.full_like(keep, c), keep], 1))
    return torch.cat(rows) if rows else boxes.new_zeros((0, 3), dtype=torch.int64)


@multiclass_nms.register_fake
def _(boxes, scores, iou_threshold, score_threshold):
    m = torch.library.get_ctx().new_dynamic_size()
    return boxes.new_empty((m, 3), dtype=torch.int64)


def _multiclass_nms_onnx(boxes, scores, iou_threshold: float, score_threshold: float):
    from onnxscript import opset18 as op

    max_per_class = op.Constant(value_ints=[2 ** 31 - 1])
    return op.NonMaxSuppression(boxes, scores, max_per_class, op.Constant(value_floats=[iou_threshold]),
                                op.Constant(value_floats=[score_threshold]))


def translations() -> dict:
    """custom_translation_table for torch.onnx.export."""
    return {torch.ops.r1.multiclass_nms.default: _multiclass_nms_onnx}


class DetWithNMS(nn.Module):
    """An R1Det plus its post-processing in fixed shapes (the graph `r1 export --nms` writes)."""

    def __init__(self, det: nn.Module):
        super().__init__()
        self.det = det

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        c = self.det.cfg
        cls, deltas = self.det.forward_raw(images)                  # (B, A, K), (B, A, 4)
        anchors, per_level = self.det.anchors(images.shape[-2:], images.device)
        boxes = self.det.coder.decode(deltas, anchors[None])        # (B, A, 4)
        num_classes = cls.shape[-1]
        cand_scores, cand_boxes, cand_labels = [], [], []
        for lvl_cls, lvl_boxes in zip(cls.split(per_level, 1), boxes.split(per_level, 1)):
            flat = torch.sigmoid(lvl_cls).flatten(1)                # (B, A_l * K)
            # top-k first, threshold after: the same set as thresholding, then top-k
            s, idx = flat.topk(min(c.topk, flat.shape[1]), dim=1)  # (B, k)
            anchor = torch.div(idx, num_classes, rounding_mode="floor")
            cand_scores.append(s)
            cand_labels.append(idx % num_classes)
            cand_boxes.append(torch.gather(lvl_boxes, 1, anchor[..., None].expand(-1, -1, 4)))
        h, w = images.shape[-2:]
        scores, labels = torch.cat(cand_scores, 1), torch.cat(cand_labels, 1)  # (B, N)
        xy = torch.cat(cand_boxes, 1).unflatten(-1, (2, 2))         # (B, N, 4) -> (B, N, 2, 2)
        boxes = torch.stack([xy[..., 0].clamp(0, w), xy[..., 1].clamp(0, h)], -1).flatten(-2)
        # one row of scores per class, zero where the candidate has another label: (B, C, N)
        classes = torch.arange(num_classes, device=images.device)[None, :, None]
        per_class = torch.where(labels[:, None, :] == classes, scores[:, None, :], torch.zeros_like(scores[:, None]))
        kept = multiclass_nms(boxes, per_class, c.nms_iou, c.score_thresh)  # (M, 3)
        keep = torch.zeros_like(scores)
        keep = keep.index_put((kept[:, 0], kept[:, 2]), torch.ones_like(kept[:, 0], dtype=scores.dtype))
        ranked = torch.where(keep > 0, scores, torch.full_like(scores, -1.0))
        top, order = ranked.topk(min(c.max_det, ranked.shape[1]), dim=1)  # (B, D), best first
        valid = top > 0  # kept candidates score above the threshold (>= 0)
        out_boxes = torch.gather(boxes, 1, order[..., None].expand(-1, -1, 4)) * valid[..., None]
        out_scores = torch.where(valid, top, torch.zeros_like(top))
        out_labels = torch.where(valid, torch.gather(labels, 1, order), torch.full_like(order, -1))
        return out_boxes, out_scores, out_labels, valid.sum(1)


def unpad(outputs: list) -> list[dict[str, torch.Tensor]]:
    """Graph outputs (boxes, scores, labels, num_dets), numpy or torch -> per image
    {"boxes" (n, 4), "scores" (n,), "labels" (n,)}, what `R1Det.forward` returns."""
    boxes, scores, labels, num = (torch.as_tensor(np.asarray(o)) if not isinstance(o, torch.Tensor) else o
                                  for o in outputs)
    return [{"boxes": boxes[i, :n], "scores": scores[i, :n], "labels": labels[i, :n]}
            for i, n in enumerate(num.tolist())]


def match_detections(ref: list[dict], got: list[dict], relative_boxes: bool = False) -> float:
    """Largest box/score difference between two lists of per-image detections, matched as sets
    (two boxes whose scores differ by float rounding may swap places); inf when the image count,
    a detection count or the labels do not match. With `relative_boxes`, a box difference is
    divided by max(1, |coordinate|): float32 keeps ~7 digits, so the absolute rounding of a
    coordinate grows with its size in pixels."""
    if len(ref) != len(got):
        return float("inf")
    worst = 0.0
    for a, b in zip(ref, got):
        if len(a["labels"]) != len(b["labels"]):
            return float("inf")
        free = list(range(len(b["labels"])))
        for box, score, label in zip(a["boxes"], a["scores"], a["labels"]):
            cands = [j for j in free if b["labels"][j] == label]
            if not cands:
                return float("inf")
            scale = box.abs().clamp(min=1.0) if relative_boxes else 1.0
            diffs = [max(float(((box - b["boxes"][j]).abs() / scale).max()), float((score - b["scores"][j]).abs()))
                     for j in cands]
            k = int(np.argmin(diffs))
            worst = max(worst, diffs[k])
            free.remove(cands[k])
    return worst
