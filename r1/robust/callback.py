"""Adversarial training (`adversarial.*`): a trainer callback that wraps the model so that a share
(`ratio`) of every training batch is replaced by FGSM / PGD examples made against the current weights.

The wrapper attacks the model being trained (a distillation wrapper's student) in eval mode, so the
attack neither updates BatchNorm statistics nor draws dropout masks, then trains on the mixed batch
through the wrapped model's own loss (soft CutMix/MixUp targets included). The trainer evaluates and
saves `wrapper.student`: the saved weights are the plain model's.
"""
from __future__ import annotations

import logging

import torch
from torch import nn

from r1.errors import ConfigError
from r1.robust.attacks import PixelModel, attack
from r1.train.callbacks import Callback, register_callback

log = logging.getLogger("r1.train")


class AdversarialBatches(nn.Module):
    """`model(images, targets)`: the first round(ratio * B) images replaced by attacked copies, then the
    wrapped model's losses; `model(images)` (prediction) and eval mode pass straight through."""

    def __init__(self, inner: nn.Module, cfg, mean: list[float], std: list[float]):
        super().__init__()
        self.inner, self.cfg = inner, cfg
        self._pixels = PixelModel(nn.Identity(), mean, std)  # normalisation only; the model is bound per call
        self.generator = torch.Generator().manual_seed(0)  # PGD random starts (off the global RNG)

    @property
    def student(self) -> nn.Module:
        return getattr(self.inner, "student", self.inner)

    def adversarial(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Attacked copies of normalised `images` (returned normalised, in the input dtype)."""
        net = PixelModel(self.student, self._pixels.mean.tolist(), self._pixels.std.tolist())
        was_training = self.student.training
        self.student.eval()
        try:
            x_adv = attack(self.cfg.method, net, net.to_pixels(images.float()), targets, self.cfg.eps,
                           self.cfg.steps, self.cfg.alpha, generator=self.generator)
        except ValueError as err:
            raise ConfigError(f"adversarial.method: {err}") from None
        finally:
            self.student.train(was_training)
        return net.normalize(x_adv).to(images.dtype)

    def forward(self, images: torch.Tensor, targets=None):
        if targets is None:
            return self.inner(images)
        n = round(self.cfg.ratio * len(images))
        if self.training and n > 0 and self.cfg.eps > 0:
            images = torch.cat([self.adversarial(images[:n], targets[:n]), images[n:]])
        return self.inner(images, targets)


@register_callback
class AdversarialTraining(Callback):
    """`adversarial.method=fgsm|pgd`: wrap the model (after distillation's wrapper, so the student is
    attacked and the teacher sees the same adversarial images)."""
    order = 25

    def __init__(self, cfg):
        self.cfg = cfg

    @classmethod
    def from_config(cls, cfg):
        return cls(cfg.adversarial) if cfg.adversarial.method != "none" else None

    def on_build_model(self, trainer, model):
        pre = trainer.data.meta.get("preprocess") or {}
        if "mean" not in pre or "std" not in pre:
            raise ConfigError(f"adversarial.method: {self.cfg.method} needs an image classifier (data meta with "
                              f"preprocess mean/std); dataset {trainer.cfg.data.name!r} has none")
        log.info("adversarial training: %s eps %g on %.0f%% of each batch%s", self.cfg.method, self.cfg.eps,
                 100 * self.cfg.ratio, f", {self.cfg.steps} steps" if self.cfg.method == "pgd" else "")
        return AdversarialBatches(model, self.cfg, pre["mean"], pre["std"])
