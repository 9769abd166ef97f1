"""Rows for `r1 models`: every registered model and flavor with its parameter count."""
from __future__ import annotations

import torch

from r1.registry import build_model, get_entry, list_models


def count_params(name: str, flavor: str) -> int:
    """Parameters of a flavor, counted on the meta device (no memory is allocated)."""
    entry = get_entry(name)
    fields = {"num_classes": 10} if hasattr(entry.config_cls, "num_classes") else {}
    with torch.device("meta"):
        model = build_model(name, flavor=flavor, **fields)
    # Tied parameters count once.
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def model_rows(pattern: str = "*", flops: bool = False) -> list[list]:
    rows = []
    for name in list_models(pattern):
        entry = get_entry(name)
        for flavor in entry.flavors:
            row = [name, entry.family, flavor, f"{count_params(name, flavor) / 1e6:.2f}M"]
            if flops:
                gflops = getattr(entry.builder, "gflops", None)
                row.append(f"{gflops(flavor):.2f}" if gflops else "-")
            rows.append(row)
    return rows
