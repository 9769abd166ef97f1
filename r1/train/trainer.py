"""The one Trainer: every family and every stage trains through `fit(cfg)`.

Order of one optimizer step (fixed; each piece is optional by config):
  accum_steps micro-batches (DDP syncs grads on the last one) -> non-finite guard ->
  unscale (fp16) -> clip + grad-norm alarm -> optimizer step -> scheduler step -> EMA update.

Features beyond that core (distillation, EWC, QAT, progressive unfreezing, exit calibration,
BatchNorm statistics of short runs) are callbacks (`r1.train.callbacks`): the config activates
them, callers may add their own, and the core only calls hooks.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import random
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader

from r1.artifacts import load_weights, save_artifact
from r1.config import Config, save_config, to_dict
from r1.data import DataBundle, build_data
from r1.data.unreadable import DecodeGuard, describe
from r1.errors import ConfigError, TrainingAborted
from r1.evaluate import evaluate, get_evaluator
from r1.family import get_family
from r1.registry import build_model, get_entry, list_models
from r1.train import distributed as D
from r1.train import rundir
from r1.train.callbacks import Callback, StepFunction, WrapModel, config_callbacks
from r1.train.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from r1.train.hardware import memory_mb, pick_device, resolve_amp, set_threads
from r1.train.logs import StepLog, setup_run_logging
from r1.train.optim import build_optimizer, build_scheduler
from r1.train.sampler import ResumableSampler, SeededItems
from r1.train.sharding import Sharding, resolve_parallel

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


class Trainer:
    """`Trainer(cfg).fit()`. `callbacks` are added after the ones the config activates;
    `on_step(step, total_steps, out)` and `wrap_model(model, data) -> model` are shorthands for
    a callback with that one hook."""

    def __init__(self, cfg: Config, resume: bool = False, on_step: Callable | None = None,
                 wrap_model: Callable[[nn.Module, DataBundle], nn.Module] | None = None,
                 callbacks: list[Callback] | tuple = ()):
        self.cfg = cfg
        self.callbacks = [*config_callbacks(cfg), *callbacks]
        self.callbacks += [WrapModel(wrap_model)] if wrap_model else []
        self.callbacks += [StepFunction(on_step)] if on_step else []
        self.device = pick_device(cfg.run.device, D.env_local_rank())
        self.dist = D.init_distributed(self.device)
        self.sharding = Sharding(resolve_parallel(cfg.train.parallel, self.dist.world), self.dist, self.device)
        self.threads = set_threads(cfg.run.threads, self.dist.local_world)
        self.dir = cfg.run.resolved_dir()
        self.run_lock = rundir.claim(self.dir, resume, self.dist.is_main)  # checks, then an exclusive lock
        self.writer = setup_run_logging(self.dir, self.dist.is_main)
        seed_everything(cfg.run.seed)
        self.data = build_data(cfg.data, cfg.run.seed)
        self.family = self.data.family
        check_family(cfg, self.data)
        self.model = self._build_model()
        self.student = getattr(self.model, "student", self.model)  # what is evaluated and saved (wrappers expose it)
        self.micro_bs = self._micro_batch_size()
        self.train_loader = self.loader(self.data.train, train=True)
        self.decode_guard = DecodeGuard(len(self.train_loader), cfg.train.max_bad_batches, describe(cfg.data))
        self.steps_per_epoch = max(1, len(self.train_loader.sampler) // (self.micro_bs * cfg.train.accum_steps))
        self.total_steps = cfg.train.max_steps or cfg.train.epochs * self.steps_per_epoch
        self.model = self.sharding.shard_model(self.model, cfg)
        self.opt = self.sharding.wrap_optimizer(build_optimizer(self.model, cfg.optim))
        self.sched = build_scheduler(self.opt, cfg.sched, self.total_steps)
        self.amp_dtype = resolve_amp(cfg.train.amp, self.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.ema = (AveragedModel(self.student, multi_avg_fn=get_ema_multi_avg_fn(cfg.train.ema_decay),
                                  use_buffers=True) if cfg.train.ema else None)
        self.ddp = (DDP(self.model, **D.ddp_kwargs(self.device), **self._merged("ddp_kwargs"))
                    if self.sharding.uses_ddp else None)
        ev = get_evaluator(self.family)
        self.monitor = cfg.train.monitor or ev.monitor
        self.mode = ev.mode if cfg.train.monitor_mode == "auto" else cfg.train.monitor_mode
        self.state = {"step": 0, "epoch": 0, "pos": 0, "best": None, "bad_evals": 0,
                      "nonfinite_streak": 0, "nonfinite_total": 0, "time": 0.0, "cpu": 0.0}
        if resume:
            self._load_state()
        for cb in self.callbacks:
            cb.on_setup(self)

    # ------------------------------------------------------------------ set-up
    def _merged(self, hook: str, *args) -> dict:
        out = {}
        for cb in self.callbacks:
            out.update(getattr(cb, hook)(self, *args))
        return out

    def _build_model(self) -> nn.Module:
        cfg = self.cfg
        cfg.model = fill_from_meta(cfg.model, self.data.meta)
        model = build_model(cfg.model)
        for path, what in ((cfg.model.pretrained, "model.pretrained"), (cfg.train.init_from, "train.init_from")):
            if path:
                missing, skipped = load_weights(model, path)
                log.info("%s: loaded %s (%d missing, %d skipped for shape)", what, path, len(missing), len(skipped))
        if cfg.train.grad_ckpt:
            if not hasattr(model, "set_grad_checkpointing"):
                raise ConfigError(f"train.grad_ckpt: model {cfg.model.name} does not support gradient checkpointing")
            model.set_grad_checkpointing(True)
        for cb in self.callbacks:  # in order: transforms of the model (QAT), then wrappers (distillation)
            model = cb.on_build_model(self, model)
        return model.to(self.device)

    def _micro_batch_size(self) -> int:
        bs, accum, world = self.cfg.data.batch_size, self.cfg.train.accum_steps, self.dist.world
        if bs % (accum * world):
            raise ConfigError(f"data.batch_size: {bs} must be divisible by train.accum_steps x processes "
                              f"= {accum} x {world}")
        micro = bs // (accum * world)
        if len(self.data.train) // world < micro:
            raise ConfigError(f"data.batch_size: {bs} exceeds the {len(self.data.train)} training samples")
        return micro

    def loader(self, dataset, train: bool) -> DataLoader:
        """Training loader (this rank's shard, resumable order, micro-batches) or evaluation loader."""
        if train:
            sampler = ResumableSampler(len(dataset), self.cfg.run.seed, True, self.dist.rank, self.dist.world)
            return DataLoader(SeededItems(dataset), batch_size=self.micro_bs, sampler=sampler, drop_last=True,
                              collate_fn=self.data.collate, num_workers=self.cfg.data.num_workers,
                              generator=torch.Generator())  # never draw from the global RNG
        return DataLoader(dataset, batch_size=self.cfg.data.eval_batch_size, shuffle=False,
                          collate_fn=self.data.collate, num_workers=self.cfg.data.num_workers)

    # ------------------------------------------------------------------ state
    def _training_state(self) -> dict:
        """Full state (gathered from the shards under train.parallel=fsdp/zero1: every rank calls this)."""
        model_sd, optim_sd = self.sharding.state_dicts(self.model, self.opt)
        return {"model": model_sd, "optimizer": optim_sd,
                "scheduler": self.sched.state_dict(), "scaler": self.scaler.state_dict(),
                "ema": self.ema.state_dict() if self.ema else {}, "rng": rng_state(),
                "trainer": dict(self.state, world=self.dist.world)}

    def _save_last(self) -> None:
        state = self._training_state()
        if self.dist.is_main:
            save_checkpoint(state, self.dir / "checkpoints" / "last.pt")

    def _load_state(self) -> None:
        ckpt = load_checkpoint(self.dir / "checkpoints" / "last.pt")
        self.sharding.load_state_dicts(self.model, self.opt, ckpt["model"], ckpt["optimizer"])
        self.sched.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        if self.ema:
            self.ema.load_state_dict(ckpt["ema"])
        saved = dict(ckpt["trainer"])
        saved["pos"] = saved["pos"] * saved.pop("world", self.dist.world) // self.dist.world  # samples per rank
        self.state.update(saved)
        set_rng_state(ckpt["rng"])
        log.info("resumed from %s at step %d (epoch %d, sample %d)", self.dir / "checkpoints" / "last.pt",
                 self.state["step"], self.state["epoch"], self.state["pos"])

    def eval_model(self) -> nn.Module:
        if self.ema:
            return self.ema.module
        full = self.sharding.full  # fsdp: the unsharded copy (rank 0)
        return self.student if full is None else getattr(full, "student", full)

    # ------------------------------------------------------------------ loop
    def _batches(self):
        """Yield micro-batches forever, keeping `state['epoch']` / `state['pos']` (samples of this rank)."""
        sampler = self.train_loader.sampler
        while True:
            if self.state["pos"] >= sampler.per_rank - self.micro_bs + 1:
                self.state["epoch"] += 1
                self.state["pos"] = 0
            sampler.set_epoch(self.state["epoch"], self.state["pos"])
            for cb in self.callbacks:  # before the loader copies the dataset into its workers
                cb.on_epoch_start(self, self.state["epoch"])
            for batch in self.train_loader:
                self.state["pos"] += self.micro_bs
                if self.decode_guard.passes(batch, self.state["epoch"]):  # DataError when nothing decodes
                    yield batch
            self.state["pos"] = sampler.per_rank  # epoch done

    def to_device(self, x):
        return _to(x, self.device)

    def _forward(self, batch, sync: bool) -> dict[str, torch.Tensor]:
        inputs, targets = self.to_device(batch)
        net = self.ddp or self.model
        ctx = self.sharding.grad_sync(self.ddp, self.model, sync)
        autocast = (torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp_dtype
                    else contextlib.nullcontext())
        with ctx, autocast:
            losses = net(inputs, targets)
            losses.update(self._merged("extra_losses", inputs, targets))
            total = sum(losses.values())
            self.scaler.scale(total / self.cfg.train.accum_steps).backward()
        return {k: v.detach().float() for k, v in losses.items()}

    def train_step(self, batches) -> dict[str, float] | None:
        """One optimizer step over accum_steps micro-batches; None if it was skipped (non-finite)."""
        cfg = self.cfg.train
        for cb in self.callbacks:
            cb.on_step_start(self, self.state["step"])
        self.opt.zero_grad(set_to_none=True)
        parts: dict[str, torch.Tensor] = {}
        for i in range(cfg.accum_steps):
            batch = next(batches)  # never None: _batches skips micro-batches with nothing decodable
            for k, v in self._forward(batch, sync=i == cfg.accum_steps - 1).items():
                parts[k] = parts.get(k, 0.0) + v / cfg.accum_steps
        loss = sum(parts.values())
        self.scaler.unscale_(self.opt)
        params = [p for p in self.model.parameters() if p.grad is not None]
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.clip_grad if cfg.clip_grad > 0 else float("inf"))
        grad_norm = grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm  # fsdp: a DTensor
        bad = not (math.isfinite(float(loss)) and math.isfinite(float(grad_norm)))
        if D.any_rank(bad, self.dist):
            return self._skip_nonfinite(float(loss))
        self.state["nonfinite_streak"] = 0
        if cfg.grad_alarm and grad_norm > cfg.grad_alarm:
            log.warning("step %d: grad_norm %.3g exceeds train.grad_alarm %.3g", self.state["step"],
                        float(grad_norm), cfg.grad_alarm)
        self.scaler.step(self.opt)
        self.scaler.update()
        self.sched.step()
        if self.ema:
            self.ema.update_parameters(self.student)
        self.state["step"] += 1
        out = {k: float(D.all_mean(v, self.dist)) for k, v in parts.items()}
        out["loss"] = sum(out.values())
        out["grad_norm"] = float(grad_norm)
        return out

    def _skip_nonfinite(self, loss: float) -> None:
        self.opt.zero_grad(set_to_none=True)
        if self.scaler.is_enabled():
            self.scaler.update()  # lowers the scale, as fp16 overflow handling expects
        self.state["nonfinite_streak"] += 1
        self.state["nonfinite_total"] += 1
        limit = self.cfg.train.max_nonfinite
        log.warning("step %d: non-finite loss/gradient (loss=%s), step skipped (%d in a row, limit %d)",
                    self.state["step"], loss, self.state["nonfinite_streak"], limit)
        if self.state["nonfinite_streak"] >= limit:
            raise TrainingAborted(f"training aborted: {limit} non-finite steps in a row at step "
                                  f"{self.state['step']}; lower optim.lr or set train.clip_grad")
        return None

    def _before_eval(self, final: bool) -> None:
        for cb in self.callbacks:
            cb.before_eval(self, self.eval_model(), final)

    def _evaluate(self, split: str, out_dir: Path | None = None) -> dict[str, float]:
        dataset = {"val": self.data.val, "test": self.data.test}[split]
        if dataset is None:
            return {}
        metrics = evaluate(self.family, self.eval_model(), self.loader(dataset, train=False),
                           self.data.meta, self.device, out_dir)
        return {f"{split}/{k}": v for k, v in metrics.items()}

    def _improved(self, value: float) -> bool:
        best = self.state["best"]
        return best is None or (value > best if self.mode == "max" else value < best)

    def _eval_and_checkpoint(self, history) -> bool:
        """Validate (rank 0), keep best weights, save last.pt; True when early stopping triggers."""
        stop = False
        self.sharding.refresh_full(self.model)
        if self.dist.is_main:
            self._before_eval(final=False)
            metrics = self._evaluate("val")
            value = metrics.get(f"val/{self.monitor}")
            if value is None:
                raise ConfigError(f"train.monitor: {self.monitor!r} is not a metric of this family; "
                                  f"available: {', '.join(k.split('/', 1)[1] for k in metrics)}")
            if self._improved(value):
                self.state["best"], self.state["bad_evals"] = value, 0
                save_checkpoint({"model": self.eval_model().state_dict(), "step": self.state["step"]},
                                self.dir / "checkpoints" / "best.pt")
            else:
                self.state["bad_evals"] += 1
            stop = bool(self.cfg.train.patience) and self.state["bad_evals"] >= self.cfg.train.patience
            asked = [cb.on_eval_end(self, metrics) for cb in self.callbacks]  # every callback sees the metrics
            stop = stop or any(asked)
            log.info("eval step %d | %s | best %s %.4f%s", self.state["step"],
                     " ".join(f"{k} {v:.4f}" for k, v in metrics.items()), self.monitor, self.state["best"],
                     " | early stop" if stop else "")
            history.write({"step": self.state["step"], **metrics}, self.writer)
        stop = D.any_rank(stop, self.dist)
        self._save_last()
        D.barrier(self.dist)
        return stop

    def fit(self) -> dict[str, float]:
        cfg = self.cfg
        if self.dist.is_main:
            save_config(cfg, self.dir / "config.yaml")
            log.info("run %s | model %s/%s %.2fM params | %d train samples | %d steps (%d per epoch) | "
                     "batch %d (micro %d x accum %d x %d procs) | %d threads | device %s",
                     self.dir, cfg.model.name, cfg.model.flavor, count_params(self.student) / 1e6,
                     len(self.data.train), self.total_steps, self.steps_per_epoch, cfg.data.batch_size,
                     self.micro_bs, cfg.train.accum_steps, self.dist.world, self.threads, self.device)
        history = StepLog(self.dir / "history.jsonl", self.dist.is_main, self.total_steps,
                          primary_loss=get_family(self.family).primary_loss)
        batches = self._batches()
        eval_every = cfg.train.eval_every or self.steps_per_epoch
        ckpt_every = cfg.train.ckpt_every or eval_every
        self.model.train()
        window, t0, seen = {}, time.perf_counter(), 0
        c0 = time.process_time()
        while self.state["step"] < self.total_steps:
            out = self.train_step(batches)
            if out is None:
                continue
            step = self.state["step"]
            seen += cfg.data.batch_size
            for k, v in out.items():
                window.setdefault(k, []).append(v)
            if step % cfg.train.log_every == 0 or step == self.total_steps:
                dt = time.perf_counter() - t0
                self.state["time"] += dt
                self.state["cpu"] = self.state.get("cpu", 0.0) + time.process_time() - c0
                rec = {k: float(np.mean(v)) for k, v in window.items()}
                rec.update(step=step, lr=self.sched.get_last_lr()[0], samples_per_s=seen / max(dt, 1e-9),
                           mem_mb=memory_mb(self.device))
                if self.data.meta.get("block_size"):  # language models: tokens per second too
                    rec["tokens_per_s"] = rec["samples_per_s"] * self.data.meta["block_size"]
                history.log_train(rec, self.writer)
                window, t0, seen = {}, time.perf_counter(), 0
                c0 = time.process_time()
            for cb in self.callbacks:
                cb.on_step_end(self, step, out)
            stop = False
            if step % eval_every == 0 or step == self.total_steps:
                self.state["time"] += time.perf_counter() - t0
                self.state["cpu"] = self.state.get("cpu", 0.0) + time.process_time() - c0
                stop = self._eval_and_checkpoint(history)
                # evaluation time is neither training time nor throughput
                t0, seen, c0 = time.perf_counter(), 0, time.process_time()
            elif step % ckpt_every == 0:
                self._save_last()
            if stop:
                break
        return self._finish(history)

    def _finish(self, history) -> dict[str, float]:
        metrics: dict[str, float] = {}
        self.sharding.refresh_full(self.model)
        if self.dist.is_main:
            best = self.dir / "checkpoints" / "best.pt"
            if best.is_file():
                self.eval_model().load_state_dict(load_checkpoint(best)["model"])
            self._before_eval(final=True)
            metrics.update(self._evaluate("val"))
            metrics.update(self._evaluate("test", out_dir=self.dir))
            metrics.update({"train/steps": self.state["step"], "train/time_s": round(self.state["time"], 2),
                            "train/cpu_s": round(self.state.get("cpu", 0.0), 2),
                            "train/nonfinite_skipped": self.state["nonfinite_total"]})
            metrics.update({f"data/{k}": v for k, v in self.data.stats.items()}, **self.decode_guard.metrics())
            final = self.eval_model()
            for cb in self.callbacks:
                final = cb.on_finish(self, final)
            save_artifact(final, self.dir, self.data.meta, to_dict(self.cfg.data))
            (self.dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
            history.write({"step": self.state["step"], "final": True, **metrics})
            log.info("done | %s | artifacts in %s", " ".join(f"{k} {v:.4g}" for k, v in metrics.items()
                                                              if isinstance(v, float)), self.dir)
            if self.writer:
                self.writer.close()
        history.close()
        if self.run_lock is not None:
            self.run_lock.release()
        D.barrier(self.dist)
        D.cleanup(self.dist)
        return metrics


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _to(x, device: torch.device):
    if isinstance(x, torch.Tensor):
        return x.to(device, non_blocking=True)
    if isinstance(x, dict):
        return {k: _to(v, device) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_to(v, device) for v in x)
    return x


def check_family(cfg: Config, data: DataBundle) -> None:
    """The model must belong to the data's family (a digits config with model.name=r1_lm is a
    one-line error, not a traceback from inside the model)."""
    family = get_entry(cfg.model.name).family
    if family != data.family:
        raise ConfigError(f"model.name: {cfg.model.name} is a {family}-family model but data.name {cfg.data.name} is "
                          f"{data.family}-family data; allowed models for {data.family} data: "
                          f"{', '.join(list_models(family=data.family))}")


def fit(cfg: Config, resume: bool = False, on_step: Callable | None = None, **kw) -> dict[str, float]:
    """Train `cfg` to completion; returns the final metrics (also written to metrics.json).
    `kw`: `wrap_model=`, `callbacks=` (see Trainer)."""
    get_entry(cfg.model.name)  # fail on an unknown model before touching data
    return Trainer(cfg, resume=resume, on_step=on_step, **kw).fit()
