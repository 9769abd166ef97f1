"""`data.balance=sampler|loss`: class balancing for classification data, as a trainer callback.

sampler: the training sampler draws items with probability 1 / (images of their class), with
         replacement, as many per epoch as before. The draw comes from the same (seed, epoch)
         generator as the shuffle, so an exact resume stays exact.
loss:    cross-entropy weighted per class by n / (classes x images of the class) (scikit-learn's
         "balanced"), so each class carries the same total weight.
The imbalance ratio (max/min images per class) is logged before and after, and reported in
metrics.json as data/balance_ratio_before and data/balance_ratio_after.
"""
from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

from r1.errors import ConfigError
from r1.train.callbacks import Callback, register_callback

log = logging.getLogger("r1.train")


def train_labels(dataset) -> list[int]:
    """Class index of every training item, read without decoding an image; wrappers (`.base`, e.g.
    the CutMix/MixUp pairs) are looked through."""
    d = dataset
    while d is not None:
        if hasattr(d, "indices") and hasattr(d, "base") and hasattr(d.base, "targets"):
            return [int(d.base.targets[i]) for i in d.indices]  # a split of an ImageFolder
        for attr in ("labels", "targets"):
            if hasattr(d, attr):
                return [int(t) for t in getattr(d, attr)]
        d = getattr(d, "base", None)
    raise ConfigError(f"data.balance: the training set ({type(dataset).__name__}) does not expose its labels; "
                      "use data.balance=none")


def ratio(counts: torch.Tensor) -> float:
    have = counts[counts > 0].double()
    return round(float(have.max() / have.min()), 3) if len(have) else 1.0


@register_callback
class ClassBalance(Callback):
    order = 5  # before any model transform or wrapper: the loss is patched on the bare model

    def __init__(self, mode: str):
        self.mode = mode

    @classmethod
    def from_config(cls, cfg):
        mode = getattr(cfg.data, "balance", "none")
        return cls(mode) if mode != "none" else None

    def _counts(self, trainer) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.tensor(train_labels(trainer.data.train))
        k = int(trainer.data.meta.get("num_classes") or int(labels.max()) + 1)
        return labels, torch.bincount(labels, minlength=k)

    def on_build_model(self, trainer, model):
        if self.mode != "loss":
            return model
        if not callable(getattr(model, "loss", None)):
            raise ConfigError(f"data.balance=loss: model {trainer.cfg.model.name} has no loss(logits, labels) "
                              "to weight; use data.balance=sampler")
        _, counts = self._counts(trainer)
        weight = counts.sum() / (len(counts) * counts.clamp(min=1).double())
        weight = weight.float()
        smoothing = float(getattr(model, "label_smoothing", 0.0))

        def weighted_ce(logits, labels):
            return {"ce": F.cross_entropy(logits, labels, weight=weight.to(logits.device), label_smoothing=smoothing)}

        model.loss = weighted_ce  # the instance's loss: the saved weights and the architecture are unchanged
        after = ratio(counts * weight.double())
        self._report(trainer, ratio(counts), after, "class-weighted loss: per-class weight sum")
        return model

    def on_setup(self, trainer):
        if self.mode != "sampler":
            return
        labels, counts = self._counts(trainer)
        sampler = trainer.train_loader.sampler
        sampler.weights = (1.0 / counts.clamp(min=1).double())[labels]
        drawn = torch.tensor([labels[i] for i, _seed in iter(sampler)])  # one epoch's draw, as training sees it
        self._report(trainer, ratio(counts), ratio(torch.bincount(drawn, minlength=len(counts))),
                     "weighted sampler: images drawn per class in one epoch")

    def _report(self, trainer, before: float, after: float, how: str) -> None:
        log.info("data.balance=%s: class imbalance %.2f:1 before, %.2f:1 after (%s)", self.mode, before, after, how)
        trainer.data.stats.update(balance_ratio_before=before, balance_ratio_after=after)
