"""Trainer features as callbacks: each owns its config section; the trainer core only calls hooks.

A `Callback` overrides the hooks it needs (all are no-ops by default). The trainer calls each hook
on every callback in list order: the built-in ones the config activates (`config_callbacks`,
sorted by `order`), then the ones a caller passes (`Trainer(cfg, callbacks=[...])`).

Hooks, in the order a run meets them:
  on_build_model(trainer, model) -> model   weights loaded, before moving to the device; may
                                            transform (QAT) or wrap (distillation) the model
  on_setup(trainer)                         everything built (model on its device, data, optimizer)
  ddp_kwargs(trainer) -> dict               extra DistributedDataParallel arguments
  on_epoch_start(trainer, epoch)            before each epoch's training items are drawn (after a
                                            resume: the epoch in progress); e.g. data.close_mosaic
  on_step_start(trainer, step)              before each optimizer step
  extra_losses(trainer, inputs, targets)    -> {name: loss} added to the model's losses
  on_step_end(trainer, step, out)           after each optimizer step (`out`: logged losses)
  before_eval(trainer, model, final)        before an evaluation of `model` (final: the last one)
  on_eval_end(trainer, metrics) -> bool     after each validation; True asks the run to stop
  on_finish(trainer, model) -> model        after the final evaluation, on rank 0: returns the
                                            model to save (each callback gets the previous one's)

A built-in callback registers its class with `register_callback`; `from_config(cfg)` returns an
instance when the config asks for the feature, else None.
"""
from __future__ import annotations

import importlib
import logging
import time

from torch import nn

from r1.errors import ConfigError

log = logging.getLogger("r1.train")


class Callback:
    order = 100  # position among the built-in callbacks (lower first)

    @classmethod
    def from_config(cls, cfg) -> Callback | None:
        """The callback `cfg` asks for, or None when the feature is off."""
        return None

    def on_build_model(self, trainer, model: nn.Module) -> nn.Module:
        return model

    def on_setup(self, trainer) -> None:
        pass

    def ddp_kwargs(self, trainer) -> dict:
        return {}

    def on_epoch_start(self, trainer, epoch: int) -> None:
        pass

    def on_step_start(self, trainer, step: int) -> None:
        pass

    def extra_losses(self, trainer, inputs, targets) -> dict:
        return {}

    def on_step_end(self, trainer, step: int, out: dict) -> None:
        pass

    def before_eval(self, trainer, model: nn.Module, final: bool) -> None:
        pass

    def on_eval_end(self, trainer, metrics: dict) -> bool:
        return False

    def on_finish(self, trainer, model: nn.Module) -> nn.Module:
        return model


_REGISTRY: list[type[Callback]] = []
# modules outside this one whose import registers built-in callbacks
_BUILTIN_MODULES = ("r1.train.bn_stats", "r1.data_tools.balance", "r1.robust.callback", "r1.train.curriculum")


def register_callback(cls: type[Callback]) -> type[Callback]:
    if cls not in _REGISTRY:
        _REGISTRY.append(cls)
    return cls


def config_callbacks(cfg) -> list[Callback]:
    """The built-in callbacks `cfg` activates, in `order`."""
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)
    found = (cls.from_config(cfg) for cls in sorted(_REGISTRY, key=lambda c: c.order))
    return [cb for cb in found if cb is not None]


# ----------------------------------------------------------------------------- built-ins
@register_callback
class QuantizationAware(Callback):
    """`qat.*`: fake-quantize the float model (after its weights load, before any wrapper), save
    it stripped back to plain float layers."""
    order = 10

    def __init__(self, cfg):
        self.cfg = cfg

    @classmethod
    def from_config(cls, cfg):
        return cls(cfg.qat) if cfg.qat.enabled else None

    def on_build_model(self, trainer, model):
        from r1.compress.qat import prepare_qat
        return prepare_qat(model, self.cfg.keep_float)

    def on_finish(self, trainer, model):
        import copy

        from r1.compress.qat import strip_qat
        return strip_qat(copy.deepcopy(model))  # the trained model keeps its fake-quant layers


@register_callback
class Distillation(Callback):
    """`distill.*`: train the student inside a wrapper with a frozen teacher (adds the `kd` loss);
    the wrapper's `.student` is what is evaluated and saved."""
    order = 20

    def __init__(self, cfg):
        self.cfg = cfg

    @classmethod
    def from_config(cls, cfg):
        return cls(cfg.distill) if cfg.distill.teacher else None

    def on_build_model(self, trainer, model):
        from r1.compress.distill import wrap_for_distillation
        return wrap_for_distillation(self.cfg)(model, trainer.data)


@register_callback
class ElasticWeightConsolidation(Callback):
    """`train.ewc_from` / `ewc_lambda`: the `ewc` penalty towards an earlier stage's weights;
    `train.ewc_samples`: after training, estimate this stage's Fisher and save it (r1.train.ewc)."""
    order = 30

    def __init__(self, cfg):
        self.cfg, self.penalty = cfg, None

    @classmethod
    def from_config(cls, cfg):
        return cls(cfg.train) if (cfg.train.ewc_from or cfg.train.ewc_samples) else None

    def on_setup(self, trainer):
        if self.cfg.ewc_from:
            from r1.train.ewc import EWCPenalty
            self.penalty = EWCPenalty.from_run(self.cfg.ewc_from, trainer.student, self.cfg.ewc_lambda)

    def extra_losses(self, trainer, inputs, targets):
        return {"ewc": self.penalty()} if self.penalty is not None else {}

    def on_finish(self, trainer, model):
        if self.cfg.ewc_samples:  # for a later stage's train.ewc_from
            from r1.train.ewc import FILE, estimate_fisher, save_ewc
            fisher = estimate_fisher(model, trainer.data.train, trainer.data.collate, self.cfg.ewc_samples,
                                     trainer.to_device, trainer.cfg.run.seed)
            save_ewc(trainer.dir / FILE, model, fisher, previous=self.penalty)
        return model


@register_callback
class ProgressiveUnfreezing(Callback):
    """`model.freeze_layers` / `unfreeze_share` (models with `on_step_start(step, total_steps)`):
    the model releases frozen blocks as steps pass, so DDP must expect unused parameters."""
    order = 40

    @classmethod
    def from_config(cls, cfg):
        return cls() if getattr(cfg.model, "freeze_layers", 0) > 0 else None

    def on_setup(self, trainer):
        if not hasattr(trainer.student, "on_step_start"):
            raise ConfigError(f"model.freeze_layers: model {trainer.cfg.model.name} does not support "
                              "progressive unfreezing (no on_step_start)")

    def ddp_kwargs(self, trainer):
        return {"find_unused_parameters": True}

    def on_step_start(self, trainer, step):
        trainer.student.on_step_start(step, trainer.total_steps)


@register_callback
class ExitCalibration(Callback):
    """`model.exit_calibrate` (models with `calibrate(loader)`, e.g. R1-LM's early-exit
    thresholds): calibrate on validation data before the final evaluation. It changes the model
    config that model.json records."""
    order = 60

    @classmethod
    def from_config(cls, cfg):
        return cls() if getattr(cfg.model, "exit_calibrate", 0) > 0 else None

    def before_eval(self, trainer, model, final):
        if not final or not hasattr(model, "calibrate") or trainer.data.val is None:
            return
        log.info("exit calibration on validation data (model.exit_calibrate=%g: early-exit thresholds for "
                 "generation; model.exit_calibrate=0 skips it) ...", trainer.cfg.model.exit_calibrate)
        t0 = time.perf_counter()
        model.calibrate(trainer.loader(trainer.data.val, train=False))
        took, trained = time.perf_counter() - t0, trainer.state.get("time", 0.0)
        share = took / max(trained, 1e-9)
        hint = ("; its cost does not shrink with the run: on short trial runs, model.exit_calibrate=0 skips it "
                "(then exit_threshold applies to every exit head)" if share > 0.25 else "")
        log.info("exit calibration done in %.1f s (%.0f%% of the %.1f s of training)%s", took, 100 * share, trained,
                 hint)


class StepFunction(Callback):
    """Adapts the `on_step(step, total_steps, out)` function callers of `fit` pass (progress bars)."""

    def __init__(self, fn):
        self.fn = fn

    def on_step_end(self, trainer, step, out):
        self.fn(step, trainer.total_steps, out)


class WrapModel(Callback):
    """Adapts a caller's `wrap_model(model, data) -> model` (e.g. a test's loss-corrupting wrapper)."""

    def __init__(self, fn):
        self.fn = fn

    def on_build_model(self, trainer, model):
        return self.fn(model, trainer.data)
