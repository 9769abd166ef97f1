"""Full training state in `checkpoints/last.pt`, loadable with `torch.load(weights_only=True)`.

Holds model, optimizer, scheduler, GradScaler, EMA, every RNG state and the data position, so a
resumed run follows the same trajectory as an uninterrupted one. Written atomically (temp file +
rename): a run killed while saving keeps the previous checkpoint.
"""
from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch


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
