"""Evaluation per family. `evaluate(family, model, loader, meta)` -> flat dict of metrics.

The metrics themselves live beside this file (accuracy/F1, COCO mAP, perplexity, BLEU/ROUGE); each
family's spec (`r1.family.FamilySpec.evaluate`) names the function that scores it:
`fn(model, loader, meta, device, out_dir) -> dict[str, float]` (keys without a split prefix, e.g.
"accuracy"), and its default monitored metric. The model is in eval mode; `loader` yields the
data bundle's collated `(inputs, targets)`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch


@dataclass
class FamilyEval:
    fn: Callable
    monitor: str
    mode: str  # "max" or "min"


def get_evaluator(family: str) -> FamilyEval:
    from r1.family import get_family

    spec = get_family(family)
    return FamilyEval(spec.hook("evaluate", "evaluation"), spec.monitor, spec.mode)


@torch.no_grad()
def evaluate(family: str, model: torch.nn.Module, loader, meta: dict, device: torch.device,
             out_dir=None) -> dict[str, float]:
    """Run the family's evaluator; `out_dir` (optional) receives plots such as a confusion matrix."""
    was_training = model.training
    model.eval()
    try:
        return get_evaluator(family).fn(model, loader, meta, device, out_dir)
    finally:
        model.train(was_training)
