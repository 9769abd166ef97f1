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
import logging
import math
import time
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader

import r1.train.distributed as D
import r1.train.rundir as rundir
from r1.config import Config, save_config
from r1.data import DataBundle, build_data
from r1.data.unreadable import DecodeGuard, describe
from r1.errors import TrainingAborted
from r1.evaluate import get_evaluator
from r1.family import get_family
from r1.registry import get_entry
from r1.train.callbacks import Callback, StepFunction, WrapModel, config_callbacks
from r1.train.checkpoint import resume_last, save_last
from r1.train.evaluation import eval_and_checkpoint, finish
from r1.train.hardware import memory_mb, pick_device, resolve_amp, set_threads
from r1.train.logs import StepLog, setup_run_logging
from r1.train.optim import build_optimizer, build_scheduler
from r1.train.prepare import build_run_model, check_family, count_params, micro_batch_size, move_to, seed_everything
from r1.train.sampler import ResumableSampler, SeededItems
from r1.train.sharding import Sharding, resolve_parallel

log = logging.getLogger("r1.train")


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
        self.micro_bs = micro_batch_size(cfg, self.dist.world, len(self.data.train))
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
            resume_last(self)
        for cb in self.callbacks:
            cb.on_setup(self)

    # ------------------------------------------------------------------ set-up
    def _merged(self, hook: str, *args) -> dict:
        out = {}
        for cb in self.callbacks:
            out.update(getattr(cb, hook)(self, *args))
        return out

    def _build_model(self) -> nn.Module:
        model = build_run_model(self.cfg, self.data.meta)
        for cb in self.callbacks:  # in order: transforms of the model (QAT), then wrappers (distillation)
            model = cb.on_build_model(self, model)
        return model.to(self.device)

    def loader(self, dataset, train: bool) -> DataLoader:
        """Training loader (this rank's shard, resumable order, micro-batches) or evaluation loader."""
        if train:
            sampler = ResumableSampler(len(dataset), self.cfg.run.seed, True, self.dist.rank, self.dist.world)
            return DataLoader(SeededItems(dataset), batch_size=self.micro_bs, sampler=sampler, drop_last=True,
                              collate_fn=self.data.collate, num_workers=self.cfg.data.num_workers,
                              generator=torch.Generator())  # never draw from the global RNG
        return DataLoader(dataset, batch_size=self.cfg.data.eval_batch_size, shuffle=False,
                          collate_fn=self.data.collate, num_workers=self.cfg.data.num_workers)

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
        return move_to(x, self.device)

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
                stop = eval_and_checkpoint(self, history)
                # evaluation time is neither training time nor throughput
                t0, seen, c0 = time.perf_counter(), 0, time.process_time()
            elif step % ckpt_every == 0:
                save_last(self)
            if stop:
                break
        return finish(self, history)

def fit(cfg: Config, resume: bool = False, on_step: Callable | None = None, **kw) -> dict[str, float]:
    """Train `cfg` to completion; returns the final metrics (also written to metrics.json).
    `kw`: `wrap_model=`, `callbacks=` (see Trainer)."""
    get_entry(cfg.model.name)  # fail on an unknown model before touching data
    return Trainer(cfg, resume=resume, on_step=on_step, **kw).fit()
