"""Evaluate a saved model (run dir or .safetensors) on a split of its data."""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from r1.config import DataConfig, apply_overrides, from_dict
from r1.data import build_data
from r1.errors import ConfigError
from r1.evaluate import evaluate
from r1.inference.predictor import load_any


def evaluate_artifact(path, split: str = "test", overrides: list[str] | None = None,
                      device: str = "cpu", runtime: str | None = None) -> dict[str, float]:
    """Rebuild the model's data from model.json (+ `data.*` overrides) and evaluate `split`.
    `path`: run dir, model.safetensors or .onnx (then the data comes from the overrides or a
    model.json beside it)."""
    overrides = overrides or []
    bad = [o for o in overrides if not o.startswith(("data.", "model."))]
    if bad:
        raise ConfigError(f"override {bad[0]!r}: only data.* and model.* keys can be changed at evaluation")
    fields = apply_overrides({}, [o for o in overrides if o.startswith("model.")]).get("model", {})
    model = load_any(path, device, runtime=runtime, **fields)
    data_dict = apply_overrides({"data": model.r1_data}, [o for o in overrides if o.startswith("data.")])["data"]
    if not data_dict:
        raise ConfigError(f"{path}: no data config is stored with this model; pass data.name=... (and data.root=...)")
    bundle = build_data(from_dict(DataConfig, data_dict, "data"), seed=0)
    dataset = {"val": bundle.val, "test": bundle.test}[split]
    if dataset is None:
        raise ConfigError(f"--split: this dataset has no {split} split")
    cfg = from_dict(DataConfig, data_dict, "data")
    loader = DataLoader(dataset, batch_size=cfg.eval_batch_size, collate_fn=bundle.collate)
    metrics = evaluate(model.r1_family, model, loader, bundle.meta, torch.device(device))
    return {f"{split}/{k}": v for k, v in metrics.items()}
