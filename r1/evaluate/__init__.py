"""Evaluation per family. `evaluate(family, model, loader, meta)` -> flat dict of metrics.

Each family registers one evaluator `fn(model, loader, meta, device) -> dict[str, float]`
(keys without a split prefix, e.g. "accuracy") and its default monitored metric.
The model is in eval mode; `loader` yields the bundle's collated `(inputs, targets)`.
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Callable

import torch

from r1.errors import ConfigError


@dataclass
class FamilyEval:
    fn: Callable
    monitor: str
    mode: str  # "max" or "min"


_EVALUATORS: dict[str, FamilyEval] = {}


def register_evaluator(family: str, monitor: str, mode: str):
    def wrap(fn):
        _EVALUATORS[family] = FamilyEval(fn, monitor, mode)
        return fn
    return wrap


def get_evaluator(family: str) -> FamilyEval:
    if family not in _EVALUATORS:  # import every evaluator module once (some may be imported already)
        for mod in pkgutil.iter_modules(__path__):
            importlib.import_module(f"{__name__}.{mod.name}")
    if family not in _EVALUATORS:
        raise ConfigError(f"no evaluator for family {family!r}; known: {', '.join(sorted(_EVALUATORS))}")
    return _EVALUATORS[family]


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
