"""Full training state in `checkpoints/last.pt`, loadable with `torch.load(weights_only=True)`.

Holds model, optimizer, scheduler, GradScaler, EMA, every RNG state and the data position, so a
resumed run follows the same trajectory as an uninterrupted one. Written atomically (temp file +
rename): a run killed while saving keeps the previous checkpoint. `save_last` / `resume_last` write and
read a trainer's state.
"""
from __future__ import annotations

import logging
import os
import random
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger("r1.train")


def rng_state() -> dict:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "python": _py_state_to_tensor(random.getstate()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    random.setstate(_py_state_from_tensor(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _py_state_to_tensor(state: tuple) -> dict:
    version, internal, gauss = state
    return {"version": version, "internal": torch.tensor(internal, dtype=torch.int64),
            "gauss": -1.0 if gauss is None else float(gauss), "has_gauss": gauss is not None}


def _py_state_from_tensor(d: dict) -> tuple:
    return d["version"], tuple(int(v) for v in d["internal"].tolist()), d["gauss"] if d["has_gauss"] else None


def save_checkpoint(state: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict:
    """The checkpoint's tensors and containers only (`weights_only`); DataError when it holds anything else."""
    from r1.artifacts import load_pickle_safely

    return load_pickle_safely(path)


# ----------------------------------------------------------------------------- a trainer's state
def training_state(trainer) -> dict:
    """The full state of `trainer` (a `r1.train.Trainer`), gathered from the shards under
    train.parallel=fsdp/zero1: every rank calls this."""
    model_sd, optim_sd = trainer.sharding.state_dicts(trainer.model, trainer.opt)
    return {"model": model_sd, "optimizer": optim_sd,
            "scheduler": trainer.sched.state_dict(), "scaler": trainer.scaler.state_dict(),
            "ema": trainer.ema.state_dict() if trainer.ema else {}, "rng": rng_state(),
            "trainer": dict(trainer.state, world=trainer.dist.world)}


def save_last(trainer) -> None:
    """`checkpoints/last.pt` of the trainer's run (written by rank 0; every rank takes part)."""
    state = training_state(trainer)
    if trainer.dist.is_main:
        save_checkpoint(state, trainer.dir / "checkpoints" / "last.pt")


def resume_last(trainer) -> None:
    """Load `checkpoints/last.pt` into the trainer: weights, optimizer, schedule, scaler, EMA, RNGs and
    the data position (rescaled to this run's process count)."""
    path = trainer.dir / "checkpoints" / "last.pt"
    ckpt = load_checkpoint(path)
    trainer.sharding.load_state_dicts(trainer.model, trainer.opt, ckpt["model"], ckpt["optimizer"])
    trainer.sched.load_state_dict(ckpt["scheduler"])
    trainer.scaler.load_state_dict(ckpt["scaler"])
    if trainer.ema:
        trainer.ema.load_state_dict(ckpt["ema"])
    saved = dict(ckpt["trainer"])
    saved["pos"] = saved["pos"] * saved.pop("world", trainer.dist.world) // trainer.dist.world  # samples per rank
    trainer.state.update(saved)
    set_rng_state(ckpt["rng"])
    log.info("resumed from %s at step %d (epoch %d, sample %d)", path,
             trainer.state["step"], trainer.state["epoch"], trainer.state["pos"])
