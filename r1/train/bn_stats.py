"""Recompute BatchNorm running statistics of trained weights (as torch.optim.swa_utils.update_bn).

BatchNorm's running mean/variance are an exponential average (momentum 0.1: roughly the last ten
steps) of statistics of weights that kept changing. After a short, fast-moving run they describe
earlier weights, and eval-mode accuracy collapses (digits, 38 steps at lr 3e-3: test accuracy 0.09
with the running statistics, 0.68 with batch statistics). Recomputing them as a plain average
over training batches, with the final weights, fixes that.

`ShortRunBatchNorm` (a trainer callback, always built) does it before every evaluation of runs
of 1 / momentum to WINDOWS / momentum optimizer steps (10 to 99 at BatchNorm's default momentum
0.1). Measured 2026-11-30 on digits (r1_mobilenetv3 tiny, lr 3e-3, one thread of an AMD EPYC; test
accuracy with the running statistics -> recomputed on one epoch of training batches):
38 steps 0.093 -> 0.685, 57 steps 0.207 -> 0.844, 76 steps 0.863 -> 0.863, 95 steps 0.904 ->
0.904; recomputed after the fact, longer runs gained nothing (190 steps 0.970 -> 0.970, 570 steps
0.967 -> 0.967), so they are left exactly as they were (the default 570-step run's weights are
bit-identical to before this callback).

With `train.ema` it acts before every evaluation of any run: an average of weights has no running
statistics of its own (averaging the student's, as AveragedModel(use_buffers=True) does, pairs
weights with statistics of other weights). Measured 2026-12-01 on the digits recipe (570 steps,
EMA decay 0.99, seed 1): with averaged statistics val accuracy sat at 0.12 (one class) until the
learning rate had decayed (step 475) and ended at 0.67; recomputed, see benchmarks/RESULTS.md.
"""
from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import Callable, Iterable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from r1.train.callbacks import Callback, register_callback

log = logging.getLogger("r1.train")
WINDOWS = 10  # runs shorter than this many 1/momentum windows get recomputed statistics
MAX_BATCHES = 32  # training micro-batches averaged (fewer when an epoch has fewer)


def batch_norms(model: nn.Module) -> list[_BatchNorm]:
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


@contextlib.contextmanager
def _only_bn_buffers_change(model: nn.Module):
    """Restore every buffer that is not a BatchNorm statistic (e.g. fake-quant ranges) afterwards,
    and every parameter's requires_grad / the model's mode."""
    bn_ids = {id(b) for m in batch_norms(model) for b in m.buffers()}
    others = {n: b.detach().clone() for n, b in model.named_buffers() if id(b) not in bn_ids}
    was = model.training
    try:
        yield
    finally:
        model.train(was)
        with torch.no_grad():
            for n, b in model.named_buffers():
                if n in others:
                    b.copy_(others[n])


@torch.no_grad()
def recompute_bn_stats(model: nn.Module, batches: Iterable, to_device: Callable, seed: int = 0) -> int:
    """Reset the running statistics of every BatchNorm and average them (momentum None) over
    `batches` of `(inputs, targets)`, run as in training (`model(inputs, targets)`, train mode:
    every branch that training runs, e.g. each width of a slimmable model, sees the data).
    Dropout draws are seeded and the global RNG is left as it was. BatchNorms no batch reached
    keep their old statistics. Returns the number of batches used."""
    norms = batch_norms(model)
    if not norms:
        return 0
    saved = {m: (m.momentum, m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone())
             for m in norms}
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    used = 0
    device = next(model.parameters()).device
    with _only_bn_buffers_change(model), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        model.train()
        for m in model.modules():
            if isinstance(m, nn.Dropout):
                m.eval()
        for batch in batches:
            if batch is None:
                continue
            inputs, targets = to_device(batch)
            model(inputs, targets)
            used += 1
    for m, (momentum, mean, var, count) in saved.items():
        m.momentum = momentum
        if used == 0 or int(m.num_batches_tracked) == 0:  # never reached: keep what it had
            m.running_mean.copy_(mean), m.running_var.copy_(var), m.num_batches_tracked.copy_(count)
    return used


@register_callback
class ShortRunBatchNorm(Callback):
    """Before each evaluation of a short run (1 / momentum <= steps < WINDOWS / momentum, with the
    largest BatchNorm momentum of the model), recompute the evaluated model's BatchNorm statistics
    on up to MAX_BATCHES training micro-batches. Inactive for models without BatchNorm.

    Runs shorter than one window (smoke tests) are left alone: on the 6-step digits test fixture
    (16 px) recomputed statistics expose a barely trained, ill-conditioned net (int8 agreement with
    fp32 0.78, and its fp32 ONNX export misses torch by 2e-4), where the stale ones give one constant
    prediction; neither is a result, and such fixtures keep their numbers."""
    order = 50

    def __init__(self):
        self.active = False

    @classmethod
    def from_config(cls, cfg):
        return cls()  # whether it acts depends on the built model and the step count (on_setup)

    def on_setup(self, trainer):
        momenta = [m.momentum for m in batch_norms(trainer.eval_model()) if m.momentum]
        window = 1 / max(momenta) if momenta else 0
        averaged = getattr(trainer, "ema", None) is not None
        self.active = bool(momenta) and (averaged or window <= trainer.total_steps < WINDOWS * window)
        if self.active and averaged:
            log.info("train.ema: the averaged weights' BatchNorm statistics are recomputed on training batches "
                     "before each evaluation")
        elif self.active:
            log.info("short run (%d steps < %d = %d / BatchNorm momentum %g): BatchNorm statistics are recomputed "
                     "on training batches before each evaluation", trainer.total_steps, round(WINDOWS * window),
                     WINDOWS, 1 / window)

    def before_eval(self, trainer, model, final):
        if not self.active:
            return
        loader = trainer.loader(trainer.data.train, train=True)
        recompute_bn_stats(model, itertools.islice(loader, min(MAX_BATCHES, len(loader))), trainer.to_device,
                           trainer.cfg.run.seed)
