"""Two-input ONNX export of the multimodal models (R1-MM, CNN+MLP, CNN+RN).

Graph inputs: `images` (B, 3, H, W) float32, `tokens` (B, T) int64 and `mask` (B, T) bool (True on
real tokens); output `logits` (B, answers). B and T are dynamic (T up to the model's max_len):
one image per question, as in evaluation and serving.

Exporter: torch.onnx.export with dynamo=True (torch.export). The eval forward runs inside
`r1.models.mm.layers.static_shapes()`, whose forms have no data-dependent shapes (the mixture of
experts runs every expert on every token and mixes them with the top-k gates, zero elsewhere;
masked token updates are `torch.where`; rotary positions are real cos/sin): the same numbers as the
eval-mode torch model. In eval the experts have no capacity limit (`MoE.capacity`), so no token is
dropped in either; the exported graph computes E/k times the expert FLOPs of the torch model.

torchvision's deformable convolution becomes ONNX `DeformConv` (opset >= 19; onnxruntime >= 1.25
has its CPU kernel) through a custom translation of `torchvision::deform_conv2d`.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from r1.errors import ConfigError, R1Error

INPUTS = ("images", "tokens", "mask")
OUTPUT = "logits"
MIN_OPSET = 19  # DeformConv
DEFAULT_OPSET = 20


class QuestionImageGraph(nn.Module):
    """The traced module: (images, tokens, mask) -> answer logits, the model's eval forward."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.model({"images": images, "tokens": tokens, "mask": mask})


def deform_translation(opset: int):
    """torchvision::deform_conv2d -> ONNX DeformConv of opset `opset` (custom_translation_table entry)."""
    import onnxscript

    op = getattr(onnxscript, f"opset{opset}", None)
    if op is None:
        raise ConfigError(f"export opset: {opset} is not known to onnxscript {onnxscript.__version__}")

    def deform_conv2d(input, weight, offset, mask, bias, stride_h: int, stride_w: int, pad_h: int, pad_w: int,
                      dilation_h: int, dilation_w: int, groups: int, offset_groups: int, use_mask: bool):
        # DCNv1 (use_mask False): torchvision passes a dummy mask that must be left out
        return op.DeformConv(input, weight, offset, bias, mask if use_mask else None,
                             dilations=[dilation_h, dilation_w], group=groups, offset_group=offset_groups,
                             pads=[pad_h, pad_w, pad_h, pad_w], strides=[stride_h, stride_w])

    return {torch.ops.torchvision.deform_conv2d.default: deform_conv2d}


def max_tokens(model: nn.Module, meta: dict) -> int:
    """Longest question the graph takes: the model's max_len (else the data's, else 64)."""
    return int(getattr(model.cfg, "max_len", 0) or meta.get("max_len") or 64)


def example_batch(meta: dict, n: int, length: int, seed: int) -> tuple[torch.Tensor, ...]:
    """n random images and questions of `length` tokens; row 0 has half of its tokens as padding."""
    gen = torch.Generator().manual_seed(seed)
    h, w = meta["preprocess"]["size"]
    images = torch.randn(n, 3, h, w, generator=gen)
    tokens = torch.randint(0, int(meta["vocab_size"]), (n, length), generator=gen)
    mask = torch.ones(n, length, dtype=torch.bool)
    mask[0, max(1, length // 2):] = False
    return images, tokens, mask


def export_mm(model, out: str | Path, *, opset: int | None = None, verify: bool = True, atol: float = 1e-4,
              options: dict | None = None, meta: dict | None = None, metadata=None, **_ignored) -> dict:
    """Export an mm model to `out` (module doc); verified with onnxruntime at another batch size and
    question length. `metadata(model, meta, example)` -> the generic R1 metadata_props."""
    from r1.models.mm.layers import static_shapes
    from r1.onnx.compact import compact_onnx

    opset = DEFAULT_OPSET if opset is None else int(opset)
    if opset < MIN_OPSET:
        raise ConfigError(f"--opset {opset}: the multimodal models need opset >= {MIN_OPSET} (ONNX DeformConv)")
    graph = QuestionImageGraph(model.eval()).eval()
    T = max_tokens(model, meta)
    if T < 2:
        raise ConfigError(f"model.max_len: {T} is too short to export (>= 2 tokens)")
    example = example_batch(meta, 2, min(T, 8), seed=0)  # >= 2 each: torch.export specialises sizes 0 and 1
    batch = torch.export.Dim("batch", min=1, max=4096)
    seq = torch.export.Dim("seq", min=1, max=T)
    dyn = ({0: batch}, {0: batch, 1: seq}, {0: batch, 1: seq})
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with torch.no_grad(), static_shapes():
        torch.onnx.export(graph, example, str(out), input_names=list(INPUTS), output_names=[OUTPUT],
                          dynamic_shapes=dyn, opset_version=opset, external_data=False, verbose=False, dynamo=True,
                          custom_translation_table=deform_translation(opset))
    seconds = time.perf_counter() - t0
    props = metadata(model, meta, example[0]) if metadata is not None else {}
    props["r1.mm"] = json.dumps({"inputs": list(INPUTS), "output": OUTPUT, "max_len": T, "opset": opset})
    compact_onnx(out, props)
    report = {"path": str(out), "family": "mm", "export_seconds": round(seconds, 2), "dynamic_batch": True,
              "outputs": [OUTPUT], "inputs": list(INPUTS), "max_len": T, "opset": opset}
    if verify:
        report.update(verify_mm(graph, out, meta, T, atol))
    return report


@torch.no_grad()
def verify_mm(graph: nn.Module, path: Path, meta: dict, T: int, atol: float) -> dict:
    """onnxruntime against the torch eval forward (outside static_shapes: the model as trained) at
    batch 3 with the longest question and at batch 1 with a short one."""
    from r1.onnx.graph import ort_session

    sess = ort_session(path)
    worst = 0.0
    for b, t, seed in ((3, T, 1), (1, min(T, 3), 2)):
        x = example_batch(meta, b, t, seed)
        ref = graph(*x).numpy()
        got = sess.run(None, dict(zip(INPUTS, (a.numpy() for a in x))))[0]
        worst = max(worst, float(np.abs(ref - got).max()) if ref.shape == got.shape else float("inf"))
    if not worst <= atol:
        raise R1Error(f"{path}: onnxruntime differs from torch (max abs diff {worst:.3g} > {atol:g})")
    return {"verify_batch": 3, "max_abs_diff": worst}
