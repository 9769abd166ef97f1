"""The lm configs parse strictly and describe what they claim."""
from pathlib import Path

import pytest

from r1.config import load_config
from r1.registry import build_model

CONFIGS = sorted(Path(__file__).resolve().parents[2].joinpath("configs", "lm").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_loads(path):
    cfg = load_config(path)
    assert cfg.model.name in ("gpt", "r1_lm") and cfg.train.max_steps > 0


def test_shakespeare_configs_match_the_reference_budget():
    base = load_config(CONFIGS[0].parent / "gpt-baseline-shakespeare.yaml")
    r1 = load_config(CONFIGS[0].parent / "shakespeare-char.yaml")
    for c in (base, r1):  # same token budget: 2000 x 12 x 64
        assert (c.train.max_steps, c.data.batch_size, c.data.block_size) == (2000, 12, 64)
    assert (base.model.n_layer, base.model.n_head, base.model.n_embd, base.model.block_size) == (4, 4, 128, 64)
    assert (base.optim.lr, base.optim.betas[1], base.sched.warmup_steps) == (1e-3, 0.99, 100)
    assert base.optim.lr * base.sched.min_lr_ratio == pytest.approx(1e-4)
    model = build_model(r1.model, num_classes=65)  # tiny-shakespeare has 65 characters
    assert sum(p.numel() for p in model.parameters()) <= 850_000
