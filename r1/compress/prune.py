"""Structured pruning that physically removes channels, ranked by L1 norm.

Prunable groups of the R1 MobileNetV3 (the classifier, and the backbone R1-Det shares; for the
detector only the expansion channels, which never reach the FPN):
  * the expansion channels inside each inverted residual (expand conv + BN -> depthwise conv + BN
    -> SE reduce inputs / SE expand outputs -> project conv inputs). They never reach a residual
    add, so pruning them cannot break a skip connection; the SE bottleneck is pinned.
  * the last 1x1 conv's channels (its BN, and the classifier's first Linear inputs),
  * the classifier's hidden units.
The pruned model is rebuilt from its config alone (`exp_channels`, `last_channels`, `head_dim`),
so model.json describes it and every loader works unchanged.
"""
from __future__ import annotations

import copy
import dataclasses
import math

import torch
import torch.nn as nn

from r1.errors import ConfigError
from r1.layers import InvertedResidual
from r1.registry import build_model

MIN_KEEP = 8  # never prune a group below this many channels


def _groups(model: nn.Module) -> dict[str, int]:
    """Prunable group name -> its current channel count."""
    if not hasattr(model, "backbone") or not hasattr(model.backbone, "blocks"):
        raise ConfigError(f"prune: model {type(model).__name__} has no prunable MobileNetV3 backbone")
    out = {}
    for i, block in enumerate(model.backbone.blocks):
        if isinstance(block, InvertedResidual) and _has_expand(block):
            out[f"block{i}"] = block.block[0][0].out_channels
    if _is_classifier(model):  # a detector's last conv feeds the FPN: its channels stay
        out["last"] = model.backbone.blocks[-1][0].out_channels
        out["head"] = model.head[0].out_features
    return out


def _is_classifier(model: nn.Module) -> bool:
    head = getattr(model, "head", None)
    return isinstance(head, nn.Sequential) and isinstance(head[0], nn.Linear)


def _has_expand(block: InvertedResidual) -> bool:
    first = block.block[0][0]
    return first.kernel_size == (1, 1) and first.groups == 1


def _importance(model: nn.Module, group: str) -> torch.Tensor:
    """L1 norm of each output channel's filter (for the head: of each hidden unit's weight row)."""
    if group == "head":
        w = model.head[0].weight
    elif group == "last":
        w = model.backbone.blocks[-1][0].weight
    else:
        w = model.backbone.blocks[int(group[5:])].block[0][0].weight
    return w.detach().abs().flatten(1).sum(1)


def l1_plan(model: nn.Module, fraction: float, reference: dict[str, int] | None = None) -> dict[str, torch.Tensor]:
    """Channels to keep per group: drop `fraction` of each group's reference size (default: current size)
    with the smallest L1 norms. Returns group -> sorted indices to keep."""
    plan = {}
    for group, size in _groups(model).items():
        ref = (reference or {}).get(group, size)
        keep = max(min(MIN_KEEP, size), size - math.floor(fraction * ref + 1e-9))
        idx = _importance(model, group).topk(keep).indices.sort().values
        plan[group] = idx
    return plan


def _take(t: torch.Tensor, idx: torch.Tensor, dim: int) -> nn.Parameter | torch.Tensor:
    out = t.detach().index_select(dim, idx).clone()
    return nn.Parameter(out, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) else out


def _slice_out(m: nn.Module, idx: torch.Tensor) -> None:
    """Keep output channels `idx` of a Conv2d / Linear / BatchNorm2d."""
    if isinstance(m, nn.BatchNorm2d):
        m.weight, m.bias = _take(m.weight, idx, 0), _take(m.bias, idx, 0)
        m.running_mean, m.running_var = _take(m.running_mean, idx, 0), _take(m.running_var, idx, 0)
        m.num_features = len(idx)
        return
    m.weight = _take(m.weight, idx, 0)
    if m.bias is not None:
        m.bias = _take(m.bias, idx, 0)
    if isinstance(m, nn.Conv2d):
        m.out_channels = len(idx)
        if m.groups > 1:  # depthwise: input channels go with the outputs
            m.in_channels = m.groups = len(idx)
    else:
        m.out_features = len(idx)


def _slice_in(m: nn.Module, idx: torch.Tensor) -> None:
    m.weight = _take(m.weight, idx, 1)
    if isinstance(m, nn.Conv2d):
        m.in_channels = len(idx)
    else:
        m.in_features = len(idx)


def _prune_block(block: InvertedResidual, idx: torch.Tensor) -> None:
    expand, dw = block.block[0], block.block[1]
    for m in (expand[0], expand[1], dw[0], dw[1]):
        _slice_out(m, idx)
    expand.out_channels = dw.out_channels = len(idx)
    rest = list(block.block)[2:]
    if len(rest) == 2:  # squeeze-excite present
        se = rest[0]
        _slice_in(se.reduce, idx)
        _slice_out(se.expand, idx)
    _slice_in(rest[-1][0], idx)


def apply_plan(model: nn.Module, plan: dict[str, torch.Tensor]) -> nn.Module:
    """A new model with only the planned channels; its config is updated to rebuild it."""
    pruned = copy.deepcopy(model)
    blocks = pruned.backbone.blocks
    exp = []
    for i, block in enumerate(blocks[:-1]):
        if f"block{i}" in plan:
            _prune_block(block, plan[f"block{i}"])
            exp.append(len(plan[f"block{i}"]))
        else:
            exp.append(block.block[-1][0].in_channels)  # blocks without expansion keep their width
    if "last" in plan:
        last = blocks[-1]
        _slice_out(last[0], plan["last"])
        _slice_out(last[1], plan["last"])
        last.out_channels = pruned.backbone.out_channels = len(plan["last"])
        _slice_in(pruned.head[0], plan["last"])
    if "head" in plan:
        _slice_out(pruned.head[0], plan["head"])
        _slice_in(pruned.head[3], plan["head"])
    changes = {"exp_channels": exp}
    if "last" in plan:
        changes["last_channels"] = len(plan["last"])
    if "head" in plan:
        changes["head_dim"] = len(plan["head"])
    cfg = dataclasses.replace(model.r1_config, **changes)
    rebuilt = build_model(cfg)  # proves the config alone describes the pruned model
    rebuilt.load_state_dict(pruned.state_dict())
    return rebuilt.train(model.training)


def prune_l1(model: nn.Module, fraction: float, reference: dict[str, int] | None = None) -> nn.Module:
    """One pruning step: drop `fraction` of each group's (reference) channels by L1 norm."""
    return apply_plan(model, l1_plan(model, fraction, reference))


def group_sizes(model: nn.Module) -> dict[str, int]:
    return _groups(model)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one forward pass on a zero input of `shape` (torch's FLOP counter / 2)."""
    return count_macs_of(model, torch.zeros(shape))


def count_macs_of(model: nn.Module, inputs) -> int:
    """Multiply-accumulates of one forward pass on `inputs` (torch's FLOP counter / 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    was = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(inputs)
    model.train(was)
    return counter.get_total_flops() // 2
