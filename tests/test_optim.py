"""Optimizers, weight-decay groups and LR schedules."""
from __future__ import annotations

import math

import pytest
import torch

from r1.config import OptimConfig, SchedConfig
from r1.registry import build_model
from r1.train.optim import build_optimizer, build_scheduler, param_groups, warmup_cosine


def test_weight_decay_skips_norms_and_biases():
    model = build_model("r1_mobilenetv3", flavor="tiny", num_classes=10)
    decay, no_decay = param_groups(model, 0.05)
    assert all(p.ndim >= 2 for p in decay["params"]) and all(p.ndim == 1 for p in no_decay["params"])
    bn = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)][0]
    assert any(p is bn.weight for p in no_decay["params"]) and no_decay["weight_decay"] == 0.0
    n = sum(p.numel() for g in (decay, no_decay) for p in g["params"])
    assert n == sum(p.numel() for p in model.parameters())


def test_warmup_cosine_values():
    assert warmup_cosine(0, 100, 10, 0.1) == pytest.approx(0.1)
    assert warmup_cosine(9, 100, 10, 0.1) == pytest.approx(1.0)
    assert warmup_cosine(55, 100, 10, 0.1) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert warmup_cosine(100, 100, 10, 0.1) == pytest.approx(0.1)


def _lrs(sched_cfg: SchedConfig, steps: int, optim: str = "adamw") -> list[float]:
    model = torch.nn.Linear(4, 2)
    opt = build_optimizer(model, OptimConfig(name=optim, lr=1.0))
    sched = build_scheduler(opt, sched_cfg, steps)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_schedules_shapes():
    cos = _lrs(SchedConfig(name="warmup_cosine", warmup_steps=5, min_lr_ratio=0.0), 50)
    assert cos[0] == pytest.approx(0.2) and max(cos) == pytest.approx(1.0) and cos[-1] < 0.01
    one = _lrs(SchedConfig(name="onecycle", pct_start=0.3), 50, optim="sgd")
    peak = one.index(max(one))
    assert 10 <= peak <= 20 and one[0] < 0.1 and one[-1] < 1e-3
    assert _lrs(SchedConfig(name="constant"), 5) == [1.0] * 5


def test_sgd_nesterov_and_adamw_settings():
    model = torch.nn.Linear(4, 2)
    sgd = build_optimizer(model, OptimConfig(name="sgd", lr=0.1, momentum=0.9, nesterov=True))
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["nesterov"] and sgd.defaults["momentum"] == 0.9
    adamw = build_optimizer(model, OptimConfig(name="adamw", betas=[0.9, 0.95]))
    assert isinstance(adamw, torch.optim.AdamW) and adamw.defaults["betas"] == (0.9, 0.95)
