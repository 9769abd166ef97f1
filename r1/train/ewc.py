"""Elastic weight consolidation (EWC): a quadratic penalty that keeps the parameters an earlier
stage relied on close to that stage's values. Family-agnostic: it only needs `model(inputs,
targets) -> dict of losses` and named parameters.

* After a stage (`train.ewc_samples > 0`), `estimate_fisher` averages the squared per-sample
  gradients of the training loss (the empirical diagonal Fisher) over that many training samples;
  `save_ewc` writes it with the final weights theta* to `<run dir>/ewc.safetensors`
  (tensors `fisher.<param>` and `theta.<param>`).
* A later stage with `train.ewc_from=RUN_DIR` adds the loss key
      ewc = ewc_lambda / 2 * sum_i F_i (theta_i - theta*_i)^2.
  If that stage saves a Fisher too, the saved one is the sum of the earlier and the new Fisher,
  anchored at the new weights (online EWC), so a third stage still protects the first.
"""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, Subset

from r1.errors import ConfigError

log = logging.getLogger("r1.train")
FILE = "ewc.safetensors"


def ewc_path(path: str | Path) -> Path:
    p = Path(path)
    p = p / FILE if p.is_dir() else p
    if not p.is_file():
        raise ConfigError(f"train.ewc_from: no EWC file at {p}; train the earlier stage with train.ewc_samples > 0")
    return p


def load_ewc(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """-> (fisher, theta*) by parameter name, from a run dir or an ewc.safetensors file."""
    state = load_file(str(ewc_path(path)))
    fisher = {k[len("fisher."):]: v for k, v in state.items() if k.startswith("fisher.")}
    theta = {k[len("theta."):]: v for k, v in state.items() if k.startswith("theta.")}
    return fisher, theta


class EWCPenalty:
    """`penalty()` -> lambda/2 * sum_i F_i (theta_i - theta*_i)^2 over the model's parameters that
    have a Fisher entry of the same name and shape (others are skipped with a warning)."""

    def __init__(self, model: nn.Module, fisher: dict[str, torch.Tensor], theta: dict[str, torch.Tensor],
                 lam: float):
        params = dict(model.named_parameters())
        self.lam, self.fisher = lam, fisher
        self.terms: list[tuple[nn.Parameter, torch.Tensor, torch.Tensor]] = []
        skipped = []
        for name, f in fisher.items():
            p = params.get(name)
            if p is None or p.shape != f.shape or name not in theta:
                skipped.append(name)
                continue
            self.terms.append((p, theta[name].to(p.device, p.dtype), f.to(p.device, p.dtype)))
        if not self.terms:
            raise ConfigError("train.ewc_from: no parameter of this model matches the saved Fisher "
                              "(it must come from the same architecture)")
        if skipped:
            log.warning("ewc: %d saved tensors match no parameter of this model (e.g. %s)", len(skipped), skipped[0])

    @classmethod
    def from_run(cls, path: str | Path, model: nn.Module, lam: float) -> "EWCPenalty":
        fisher, theta = load_ewc(path)
        log.info("ewc: penalty lambda %.3g from %s (%d tensors)", lam, ewc_path(path), len(fisher))
        return cls(model, fisher, theta, lam)

    def __call__(self) -> torch.Tensor:
        total = sum((f * (p - t).square()).sum() for p, t, f in self.terms)
        return 0.5 * self.lam * total


@contextlib.contextmanager
def _loss_mode(model: nn.Module):
    """Train mode (models return losses) without its noise or side effects: dropout off, batch
    norm on running statistics (which therefore stay untouched); every parameter gets gradients."""
    was, grads = model.training, {p: p.requires_grad for p in model.parameters()}
    model.train()
    for m in model.modules():
        if isinstance(m, (nn.Dropout, nn.modules.batchnorm._BatchNorm)):
            m.eval()
    for p in grads:
        p.requires_grad_(True)
    try:
        yield
    finally:
        model.train(was)
        for p, g in grads.items():
            p.requires_grad_(g)


def estimate_fisher(model: nn.Module, dataset, collate: Callable, samples: int, to_device: Callable,
                    seed: int = 0) -> dict[str, torch.Tensor]:
    """Empirical diagonal Fisher: mean over `samples` training samples (drawn with `seed`) of the
    squared gradient of that sample's summed losses. Samples whose loss is not finite (e.g. no
    target) are skipped. Returns float32 CPU tensors by parameter name."""
    named = list(model.named_parameters())
    fisher = [torch.zeros_like(p, dtype=torch.float32) for _, p in named]
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(dataset), generator=g)[:samples].tolist()
    loader = DataLoader(Subset(dataset, order), batch_size=1, shuffle=False, collate_fn=collate)
    used = 0
    with _loss_mode(model), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for batch in loader:
            if batch is None:
                continue
            inputs, targets = to_device(batch)
            loss = sum(model(inputs, targets).values())
            if not torch.isfinite(loss):
                continue
            grads = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
            for f, gr in zip(fisher, grads):
                if gr is not None:
                    f += gr.detach().float().square()
            used += 1
    if used == 0:
        raise ConfigError("train.ewc_samples: no training sample gave a finite loss; cannot estimate the Fisher")
    log.info("ewc: Fisher estimated on %d samples", used)
    return {name: (f / used).cpu() for (name, _), f in zip(named, fisher)}


def save_ewc(path: Path, model: nn.Module, fisher: dict[str, torch.Tensor],
             previous: EWCPenalty | None = None) -> Path:
    """Write fisher.<name> (plus the earlier stage's Fisher when `previous` is given) and
    theta.<name> = the model's current weights."""
    out = {}
    for name, p in model.named_parameters():
        if name not in fisher:
            continue
        f = fisher[name]
        if previous is not None and name in previous.fisher and previous.fisher[name].shape == f.shape:
            f = f + previous.fisher[name].to(f)
        out[f"fisher.{name}"] = f.contiguous()
        out[f"theta.{name}"] = p.detach().float().cpu().clone().contiguous()
    save_file(out, str(path), metadata={"format": "r1-ewc/1", "accumulated": str(previous is not None)})
    from r1.artifacts import as_created

    return as_created(path)
