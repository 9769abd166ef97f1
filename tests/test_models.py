"""Every registered model: forward, backward, loss keys, no NaN, eval-mode predictions.

Parametrized over `list_models()`: registering a model tests it. Each family supplies a tiny batch.
"""
from __future__ import annotations

import pytest
import torch

from r1.registry import build_model, get_entry, list_models


def cls_batch(cfg):
    size = 16
    fields = {"in_features": 3 * size * size} if hasattr(cfg, "in_features") else {}
    return fields, torch.randn(2, 3, size, size), torch.tensor([0, 3]), (2, 4)


def lm_batch(cfg):
    x = torch.randint(0, 4, (2, 16))
    return {"block_size": 16}, x, torch.roll(x, -1, 1), (2, 16, 4)


BATCHES = {"cls": cls_batch, "lm": lm_batch}  # det models: tests/det/test_models.py


@pytest.mark.parametrize("name", list_models())
def test_forward_backward_loss_keys(name):
    entry = get_entry(name)
    if entry.family not in BATCHES:
        pytest.skip(f"family {entry.family} has its own model tests")
    torch.manual_seed(0)
    fields, x, y, out_shape = BATCHES[entry.family](entry.config_cls)
    model = build_model(name, flavor="tiny", num_classes=4, **fields).train()
    losses = model(x, y)
    assert isinstance(losses, dict) and losses and all(v.ndim == 0 for v in losses.values())
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    model.eval()
    with torch.no_grad():
        out = model(x)
    assert out.shape == out_shape and torch.isfinite(out).all()


@pytest.mark.parametrize("name", list_models())
def test_flavors_build(name):
    entry = get_entry(name)
    assert {"tiny", "small"} <= set(entry.flavors)
    assert entry.doc, f"{name}: the builder needs a docstring (shown by `r1 models`)"


def test_one_flavor_table_declared_with_the_config():
    """The flavors live with the torch-free config variant; the registry reads that table."""
    from dataclasses import dataclass

    from r1.config import ModelConfig, variant
    from r1.registry import flavor_preset, register_model

    for name in list_models():
        assert get_entry(name).flavors is ModelConfig._flavors[name]
        assert flavor_preset(name, "tiny") == ModelConfig.flavor_preset(name, "tiny")

    @dataclass
    class Undeclared(ModelConfig):
        pass

    with pytest.raises(ValueError, match="model no_small: flavors must include 'tiny' and 'small'"):
        variant(ModelConfig, "no_small", flavors={"tiny": {}})
    with pytest.raises(ValueError, match="model no_flavors: flavors must include 'tiny' and 'small'"):
        variant(ModelConfig, "no_flavors")
    with pytest.raises(ValueError, match=r"model undeclared: declare Undeclared first with variant\(ModelConfig"):
        register_model("undeclared", family="cls", config=Undeclared)
    assert "no_small" not in ModelConfig._variants and "undeclared" not in ModelConfig._variants
