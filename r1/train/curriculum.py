"""Curriculum learning as a trainer callback: easy samples first, the rest phased in on a pacing
schedule (competence-based, Platanios et al. 2019).

The training set says how hard each item is (`dataset.difficulty`: one number per item; e.g. the
question type for Sort-of-CLEVR). Items are ranked by difficulty (ties broken by a seeded draw);
at training progress p (samples seen / samples of the pacing period) the competence is
`c(p) = min(1, sqrt(p (1 - c0^2) + c0^2))` and only the easiest c(p) share of items is served: a
harder item drawn by the sampler is replaced by an eligible one picked by hashing (item, position).
The replacement is a pure function of the sample's global position, so a resumed run serves
exactly the same items (`ResumableSampler.remap`).
"""
from __future__ import annotations

import logging
import math

import torch

from r1.errors import ConfigError
from r1.train.callbacks import Callback, register_callback

log = logging.getLogger("r1.train")


def competence(progress: float, start: float, schedule: str = "sqrt") -> float:
    """Share of the items (easiest first) served at training progress in [0, 1+]."""
    p = min(1.0, max(0.0, progress))
    if schedule == "linear":
        return min(1.0, start + (1.0 - start) * p)
    return min(1.0, math.sqrt(p * (1.0 - start ** 2) + start ** 2))


class Remap:
    """(index, global position) -> the index served under the curriculum (picklable)."""

    def __init__(self, difficulty: torch.Tensor, period: int, start: float, schedule: str, seed: int):
        g = torch.Generator().manual_seed(seed)
        jitter = torch.rand(len(difficulty), generator=g, dtype=torch.float64) * 1e-6  # seeded tie-break
        order = torch.argsort(difficulty.double() + jitter)
        self.by_rank = order  # rank -> item
        self.rank = torch.empty_like(order)
        self.rank[order] = torch.arange(len(order))
        self.period, self.start, self.schedule, self.n = max(1, period), start, schedule, len(order)

    def eligible(self, position: int) -> int:
        return max(1, math.ceil(competence(position / self.period, self.start, self.schedule) * self.n))

    def __call__(self, idx: int, position: int) -> int:
        k = self.eligible(position)
        if int(self.rank[idx]) < k:
            return idx
        h = (idx * 2_654_435_761 + position * 40_503) % (2 ** 32)
        return int(self.by_rank[h % k])


@register_callback
class Curriculum(Callback):
    order = 6  # after data balancing (which sets the sampler's weights)

    def __init__(self, cfg):
        self.cfg = cfg

    @classmethod
    def from_config(cls, cfg):
        section = getattr(cfg, "curriculum", None)
        return cls(section) if section is not None and section.schedule != "none" else None

    def on_setup(self, trainer):
        data = trainer.data.train
        difficulty = getattr(data, "difficulty", None)
        if difficulty is None:
            raise ConfigError(f"curriculum.schedule={self.cfg.schedule}: the training set ({type(data).__name__}) has "
                              "no per-item difficulty; use curriculum.schedule=none")
        sampler = trainer.train_loader.sampler
        steps = self.cfg.steps or max(1, trainer.total_steps // 2)
        period = steps * trainer.micro_bs * trainer.cfg.train.accum_steps  # this rank's samples
        sampler.remap = Remap(torch.as_tensor(difficulty), period, self.cfg.start, self.cfg.schedule,
                              trainer.cfg.run.seed)
        log.info("curriculum (%s): the easiest %.0f%% of %d items first, all of them after %d steps",
                 self.cfg.schedule, 100 * self.cfg.start, len(difficulty), steps)
