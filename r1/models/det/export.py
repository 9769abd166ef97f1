"""ONNX export of R1-Det: the raw head (class logits + decoded boxes, post-processed in Python by
the Predictor) or, with the `nms` option, the whole detector with NMS inside the graph
(`export_nms`). Used through the det family spec's `export` hook."""
from __future__ import annotations

import json

import numpy as np
import torch
import torch.nn as nn

from r1.export.onnx import max_abs_diff
from r1.family import ExportHook


class _DetRaw(nn.Module):
    """Detector without its Python post-processing: images -> (cls logits (B, A, K), boxes (B, A, 4))."""

    def __init__(self, det: nn.Module):
        super().__init__()
        self.det = det

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cls, deltas = self.det.forward_raw(images)
        anchors, _ = self.det.anchors(images.shape[-2:], images.device)
        return cls, self.det.coder.decode(deltas, anchors[None])


def _det_wrap(model: nn.Module, options: dict) -> nn.Module:
    if options.get("nms"):
        from r1.models.det.export_nms import DetWithNMS
        return DetWithNMS(model)
    return _DetRaw(model)


def _det_outputs(options: dict) -> list[str]:
    from r1.models.det.export_nms import OUTPUTS
    return OUTPUTS if options.get("nms") else ["cls_logits", "boxes"]


def _det_meta(model: nn.Module, options: dict, example: torch.Tensor) -> dict:
    _, per_level = model.anchors(tuple(example.shape[-2:]))
    c = model.cfg
    d = {"per_level": per_level, "image_size": list(example.shape[-2:]), "score_thresh": c.score_thresh,
         "topk": c.topk, "nms_iou": c.nms_iou, "max_det": c.max_det, "nms": bool(options.get("nms"))}
    if d["nms"]:
        from r1.models.det.export_nms import CONTRACT
        d["outputs"] = CONTRACT
    return {"r1.det": json.dumps(d)}


def _det_decode(outputs: list[np.ndarray], onnx_meta: dict) -> list[dict]:
    from r1.models.det.postprocess import postprocess

    d = json.loads(onnx_meta["r1.det"])
    if d.get("nms"):  # final detections straight from the graph
        from r1.models.det.export_nms import unpad
        return unpad(outputs)
    return postprocess(torch.from_numpy(outputs[0]), torch.from_numpy(outputs[1]), d["per_level"],
                       tuple(d["image_size"]), d["score_thresh"], d["topk"], d["nms_iou"], d["max_det"])


def _det_translations(options: dict) -> dict:
    from r1.models.det.export_nms import translations
    return translations() if options.get("nms") else {}


def _det_compare(options: dict, ref: list[np.ndarray], got: list[np.ndarray]) -> float:
    """Logits and scores absolutely; box coordinates relative to their size above 1 px (a trained
    detector's raw boxes reach hundreds of pixels, where float32 rounding alone is ~1e-4)."""
    if options.get("nms"):
        from r1.models.det.export_nms import match_detections, unpad
        return match_detections(unpad(ref), unpad(got), relative_boxes=True)
    if max_abs_diff(ref, got) == float("inf"):
        return float("inf")
    (ref_cls, ref_boxes), (got_cls, got_boxes) = ref, got
    box_diff = np.abs(ref_boxes.astype(np.float64) - got_boxes) / np.maximum(1.0, np.abs(ref_boxes))
    return max(max_abs_diff([ref_cls], [got_cls]), float(box_diff.max(initial=0.0)))


EXPORT = ExportHook(output_names=_det_outputs, wrap=_det_wrap, extra_meta=_det_meta, decode=_det_decode,
                    options={"nms": False}, translations=_det_translations, compare=_det_compare)
