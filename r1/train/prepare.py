"""What the trainer builds before its first step, as plain functions: seeds, the model from its config
and the data's meta, the micro-batch size; and the checks that stop a bad config with one line."""
from __future__ import annotations

import dataclasses
import logging
import random

import numpy as np
import torch
import torch.nn as nn

from r1.artifacts import load_weights
from r1.config import Config
from r1.data import DataBundle
from r1.errors import ConfigError
from r1.registry import build_model, get_entry, list_models

log = logging.getLogger("r1.train")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def fill_from_meta(model_cfg, meta: dict):
    """Model fields left at 0 or "" (e.g. num_classes, an lm objective) take the data meta's value of that name."""
    fills = {f.name: meta[f.name] for f in dataclasses.fields(model_cfg)
             if f.name in meta and getattr(model_cfg, f.name) in (0, "") and isinstance(meta[f.name], (int, str))}
    return dataclasses.replace(model_cfg, **fills)


def check_family(cfg: Config, data: DataBundle) -> None:
    """The model must belong to the data's family (a digits config with model.name=r1_lm is a
    one-line error, not a traceback from inside the model)."""
    family = get_entry(cfg.model.name).family
    if family != data.family:
        raise ConfigError(f"model.name: {cfg.model.name} is a {family}-family model but data.name {cfg.data.name} is "
                          f"{data.family}-family data; allowed models for {data.family} data: "
                          f"{', '.join(list_models(family=data.family))}")


def build_run_model(cfg: Config, meta: dict) -> nn.Module:
    """The model of `cfg` (whose `model` section takes the data meta's values, see `fill_from_meta`), with
    the weights of model.pretrained and train.init_from, and gradient checkpointing when asked for."""
    cfg.model = fill_from_meta(cfg.model, meta)
    model = build_model(cfg.model)
    for path, what in ((cfg.model.pretrained, "model.pretrained"), (cfg.train.init_from, "train.init_from")):
        if path:
            missing, skipped = load_weights(model, path)
            log.info("%s: loaded %s (%d missing, %d skipped for shape)", what, path, len(missing), len(skipped))
    if cfg.train.grad_ckpt:
        if not hasattr(model, "set_grad_checkpointing"):
            raise ConfigError(f"train.grad_ckpt: model {cfg.model.name} does not support gradient checkpointing")
        model.set_grad_checkpointing(True)
    return model


def micro_batch_size(cfg: Config, world: int, train_samples: int) -> int:
    """Samples per forward pass on each process: data.batch_size / (train.accum_steps x processes)."""
    bs, accum = cfg.data.batch_size, cfg.train.accum_steps
    if bs % (accum * world):
        raise ConfigError(f"data.batch_size: {bs} must be divisible by train.accum_steps x processes "
                          f"= {accum} x {world}")
    micro = bs // (accum * world)
    if train_samples // world < micro:
        raise ConfigError(f"data.batch_size: {bs} exceeds the {train_samples} training samples")
    return micro


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def move_to(x, device: torch.device):
    """Tensors in `x` (a tensor, or dicts / lists / tuples of them) on `device`."""
    if isinstance(x, torch.Tensor):
        return x.to(device, non_blocking=True)
    if isinstance(x, dict):
        return {k: move_to(v, device) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(move_to(v, device) for v in x)
    return x
