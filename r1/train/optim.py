"""Optimizers and LR schedules. Weight decay never touches norms, biases or embeddings' 1-D params."""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from r1.config import OptimConfig, SchedConfig


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: >=2-D weights decay; 1-D tensors (norm scales, biases) do not."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.weight_decay)
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps)


def warmup_cosine(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """LR multiplier: linear 0->1 over `warmup` steps, then cosine 1->min_ratio at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def build_scheduler(opt: torch.optim.Optimizer, cfg: SchedConfig, total_steps: int):
    """A per-optimizer-step scheduler whose state_dict is plain numbers (safe to load with weights_only)."""
    if cfg.name == "onecycle":
        max_lrs = [g["lr"] for g in opt.param_groups]
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=max_lrs, total_steps=max(total_steps, 2),
                                                   pct_start=cfg.pct_start, cycle_momentum=False)
    if cfg.name == "constant":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    warmup = cfg.warmup_steps if cfg.warmup_steps >= 0 else max(1, round(0.05 * total_steps))
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: warmup_cosine(step, total_steps, warmup, cfg.min_lr_ratio))
