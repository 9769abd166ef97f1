"""Quantization-aware training: fake-quant fine-tuning, then conversion by static int8 quantization.

`prepare_qat` swaps every Conv2d / Linear (the first and last optionally kept in float) for a
wrapper that fake-quantizes its weights (per-channel symmetric int8) and its input activations
(per-tensor uint8, ranges tracked by a moving min/max), matching what onnxruntime's static QDQ
quantization does at conversion. Training runs through the one trainer (`qat.enabled=true`);
`strip_qat` puts the plain layers back, so the saved model is an ordinary float model whose
weights have learned to live with int8 rounding; the `quantize` stage then converts it.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class FakeQuant(nn.Module):
    """A Conv2d / Linear seen through int8 rounding (straight-through gradients)."""

    def __init__(self, layer: nn.Module, momentum: float = 0.01):
        super().__init__()
        self.layer, self.momentum = layer, momentum
        self.register_buffer("lo", torch.tensor(0.0))
        self.register_buffer("hi", torch.tensor(0.0))
        self.register_buffer("seen", torch.tensor(False))

    def _act(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            lo, hi = x.detach().min().clamp(max=0), x.detach().max().clamp(min=0)
            if not bool(self.seen):
                self.lo.copy_(lo), self.hi.copy_(hi), self.seen.fill_(True)
            else:
                self.lo.lerp_(lo, self.momentum), self.hi.lerp_(hi, self.momentum)
        scale = ((self.hi - self.lo) / 255).clamp(min=1e-8)
        zero = (-self.lo / scale).round().clamp(0, 255).to(torch.int32)
        return torch.fake_quantize_per_tensor_affine(x, scale, zero, 0, 255)

    def _weight(self) -> torch.Tensor:
        w = self.layer.weight
        scale = (w.detach().abs().flatten(1).amax(1) / 127).clamp(min=1e-8)
        return torch.fake_quantize_per_channel_affine(w, scale, torch.zeros_like(scale, dtype=torch.int32),
                                                      0, -128, 127)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # int8 is simulated in float32 even under mixed precision: bf16/fp16 rounding on top of the
        # int8 grid is not what the converted model computes (and the range buffers stay float32)
        with torch.autocast(x.device.type, enabled=False):
            x, w, m = self._act(x.float()), self._weight(), self.layer
            if isinstance(m, nn.Conv2d):
                return F.conv2d(x, w, m.bias, m.stride, m.padding, m.dilation, m.groups)
            return F.linear(x, w, m.bias)


def _quantizable(model: nn.Module) -> list[tuple[nn.Module, str, nn.Module]]:
    """(parent, child name, layer) for every Conv2d / Linear, in forward-definition order."""
    out = []
    for parent in model.modules():
        for name, child in parent.named_children():
            if isinstance(child, (nn.Conv2d, nn.Linear)):
                out.append((parent, name, child))
    return out


def prepare_qat(model: nn.Module, keep_float: list[str] | None = None) -> nn.Module:
    """In place: wrap Conv2d/Linear layers with fake quantization; returns the model."""
    layers = _quantizable(model)
    skip = set()
    if layers and "first" in (keep_float or []):
        skip.add(id(layers[0][2]))
    if layers and "last" in (keep_float or []):
        skip.add(id(layers[-1][2]))
    for parent, name, layer in layers:
        if id(layer) not in skip:
            setattr(parent, name, FakeQuant(layer))
    return model


def strip_qat(model: nn.Module) -> nn.Module:
    """In place: put the plain layers back (weights keep what QAT taught them)."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, FakeQuant):
                setattr(parent, name, child.layer)
    return model
