"""ONNX export of R1-Det: the raw head (class logits + decoded boxes, post-processed in Python by
the Predictor) or, with the `nms` option, the whole detector with NMS inside the graph
(`export_nms`). With `dynamic_hw` (`r1 export --dynamic-hw`) the graph takes any H, W that are
multiples of the coarsest stride: anchors come from the input's shape inside the graph, and the raw
graph adds an output `level_shapes` (L, 2) so the post-processing splits the anchors by level.
Used through the det family spec's `export` hook."""
from __future__ import annotations

import json

import numpy as np
import torch
import torch.nn as nn

from r1.errors import ConfigError
from r1.family import ExportHook
from r1.onnx.graph import max_abs_diff


class _DetRaw(nn.Module):
    """Detector without its Python post-processing: images -> (cls logits (B, A, K), boxes (B, A, 4)),
    plus, with `level_shapes` (dynamic-HW export), each level's feature-map (h, w) as float32 (L, 2):
    what the post-processing needs to split the anchors by level for an input of any size."""

    def __init__(self, det: nn.Module, level_shapes: bool = False):
        super().__init__()
        self.det, self.level_shapes = det, level_shapes

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        cls, deltas = self.det.forward_raw(images)
        anchors, _ = self.det.anchors(images.shape[-2:], images.device)
        boxes = self.det.coder.decode(deltas, anchors[None])
        if not self.level_shapes:
            return cls, boxes
        h, w = images.shape[-2:]
        one = torch.ones((), dtype=torch.float32, device=images.device)
        shapes = torch.stack([torch.stack([-(-h // s) * one, -(-w // s) * one]) for s in self.det.strides])
        return cls, boxes, shapes


def _det_wrap(model: nn.Module, options: dict) -> nn.Module:
    if options.get("nms"):
        from r1.models.det.export_nms import DetWithNMS
        return DetWithNMS(model)
    return _DetRaw(model, level_shapes=bool(options.get("dynamic_hw")))


def _det_outputs(options: dict) -> list[str]:
    from r1.models.det.export_nms import OUTPUTS
    if options.get("nms"):
        return OUTPUTS
    return ["cls_logits", "boxes", "level_shapes"] if options.get("dynamic_hw") else ["cls_logits", "boxes"]


def _det_stride(model: nn.Module) -> int:
    """H and W of a dynamic-HW input must be multiples of the coarsest level's stride."""
    if not hasattr(model, "forward_raw"):
        cfg = getattr(model, "r1_config", None)
        name = cfg.name if cfg is not None else type(model).__name__
        raise ConfigError(f"--dynamic-hw: model {name!r} has no dynamic-HW export (torchvision detectors "
                          f"resize inside their graph); allowed: r1_det")
    return max(model.strides)


def _det_meta(model: nn.Module, options: dict, example: torch.Tensor) -> dict:
    _, per_level = model.anchors(tuple(example.shape[-2:]))
    c = model.cfg
    d = {"per_level": per_level, "image_size": list(example.shape[-2:]), "score_thresh": c.score_thresh,
         "topk": c.topk, "nms_iou": c.nms_iou, "max_det": c.max_det, "nms": bool(options.get("nms"))}
    if options.get("dynamic_hw"):  # per_level / image_size above: the trace's; the graph gives its own
        d.update(dynamic_hw=True, strides=list(model.strides), anchors_per_cell=int(model.cells.shape[1]))
    if d["nms"]:
        from r1.models.det.export_nms import CONTRACT
        d["outputs"] = CONTRACT
    return {"r1.det": json.dumps(d)}


def _level_split(level_shapes: np.ndarray, d: dict) -> tuple[list[int], tuple[int, int]]:
    """A dynamic-HW graph's level_shapes (L, 2) -> (anchors per level, input (H, W))."""
    hw = np.rint(np.asarray(level_shapes)).astype(np.int64)
    per_level = [int(h * w) * d["anchors_per_cell"] for h, w in hw]
    return per_level, (int(hw[0, 0]) * d["strides"][0], int(hw[0, 1]) * d["strides"][0])


def _det_decode(outputs: list[np.ndarray], onnx_meta: dict) -> list[dict]:
    from r1.models.det.postprocess import postprocess

    d = json.loads(onnx_meta["r1.det"])
    if d.get("nms"):  # final detections straight from the graph
        from r1.models.det.export_nms import unpad
        return unpad(outputs)
    per_level, image_size = d["per_level"], tuple(d["image_size"])
    if d.get("dynamic_hw"):
        per_level, image_size = _level_split(outputs[2], d)
    return postprocess(torch.from_numpy(outputs[0]), torch.from_numpy(outputs[1]), per_level,
                       image_size, d["score_thresh"], d["topk"], d["nms_iou"], d["max_det"])


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
    (ref_cls, ref_boxes, *ref_rest), (got_cls, got_boxes, *got_rest) = ref, got
    box_diff = np.abs(ref_boxes.astype(np.float64) - got_boxes) / np.maximum(1.0, np.abs(ref_boxes))
    return max(max_abs_diff([ref_cls, *ref_rest], [got_cls, *got_rest]), float(box_diff.max(initial=0.0)))


EXPORT = ExportHook(output_names=_det_outputs, wrap=_det_wrap, extra_meta=_det_meta, decode=_det_decode,
                    options={"nms": False, "dynamic_hw": False}, translations=_det_translations,
                    compare=_det_compare, stride=_det_stride)
