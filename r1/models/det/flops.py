"""Parameter and FLOP counts for `r1 models` and the benchmark tables."""
from __future__ import annotations

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_gflops(model: nn.Module, size: int | tuple[int, int] | None = None) -> float:
    """GFLOPs (multiply-add = 2 FLOPs) of one inference forward on a (1, 3, H, W) image.

    `size` defaults to the model's `input_size` attribute (320 when absent). Uses the model's
    `forward_raw` (head outputs, no NMS) when it has one, so the count is independent of how
    many boxes survive post-processing.
    """
    size = size or getattr(model, "input_size", 320)
    h, w = (size, size) if isinstance(size, int) else size
    was_training = model.training
    model.eval()
    x = torch.zeros(1, 3, h, w, device=next(model.parameters()).device)
    fn = getattr(model, "forward_raw", model)
    try:
        with FlopCounterMode(display=False) as counter:
            fn(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops() / 1e9


def flavor_gflops(name: str, flavor: str, num_classes: int = 10) -> float:
    """GFLOPs of a registered model's flavor at its own `input_size` (what `r1 models --flops` shows)."""
    from r1.registry import build_model

    return count_gflops(build_model(name, flavor=flavor, num_classes=num_classes))


def with_gflops(name: str):
    """Decorator for a registered builder: attach `builder.gflops(flavor)` for `r1 models --flops`."""
    def wrap(builder):
        builder.gflops = lambda flavor: flavor_gflops(name, flavor)
        return builder
    return wrap
