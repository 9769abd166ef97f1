"""Shared fixtures. Tests run on CPU with one thread (CI has 2 cores; oversubscription is slow)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def run_r1(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 300):
    """Run the `r1` command in a subprocess; returns CompletedProcess (text)."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "r1.cli", *args], cwd=cwd or ROOT, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def torchrun(nproc: int, *args: str) -> list[str]:
    """The command line of `torchrun --standalone --nproc_per_node=NPROC -m r1.cli ARGS`.

    --standalone: the rendezvous store listens on a port the kernel picks and has a fresh id, so runs
    of this suite side by side (other checkouts, pytest-xdist workers) never join each other's group;
    a fixed --master_port would be shared by every copy of the suite on the machine."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", "r1.cli", *args]


def unused_port() -> int:
    """A loopback port nobody listens on, for a server started later by another process (torchrun's
    `--rdzv-endpoint`, which needs one port known to all its nodes). It is drawn below the kernel's
    ephemeral range: a port from bind(("", 0)) could be handed to another process's outgoing connection
    (this machine runs many loopback clients) before the server binds it."""
    import random
    import socket

    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    low = low if low > 12000 else 32768
    for port in random.Random().sample(range(10000, low), 50):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no unused loopback port below the ephemeral range")


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """Run `r1 ARGS` in this process (`r1.cli.main`), capturing stdout, stderr and the exit code.

    For checks of a message and an exit code: no interpreter start-up or re-import per call.
    Keep a few `run_r1` tests for what only a real process shows (the console script's exit path).
    """
    import contextlib
    import io

    from r1.cli import main

    out, err, code = io.StringIO(), io.StringIO(), 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(list(args))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return subprocess.CompletedProcess(["r1", *args], code, out.getvalue(), err.getvalue())


def tiny_cls_overrides(run_dir: Path, **extra) -> list[str]:
    """A seconds-long digits run: tiny MobileNetV3, few steps."""
    base = {"run.dir": str(run_dir), "run.threads": 1, "train.max_steps": 6, "train.eval_every": 3,
            "train.log_every": 2, "data.batch_size": 32, "data.img_size": 16}
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


@pytest.fixture(scope="session", autouse=True)
def _own_r1_cache(tmp_path_factory):
    """Token files of text corpora (`r1.models.lm.data_store.cache_root`) under this session's temp dir,
    for the r1 subprocesses too: not ~/.cache/r1, which other checkouts' suites and pytest-xdist workers
    fill at the same time."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("R1_CACHE", str(tmp_path_factory.mktemp("r1-cache")))
        yield


@pytest.fixture(scope="session")
def trained_digits(tmp_path_factory) -> Path:
    """One tiny trained digits run shared by the artifact / CLI tests."""
    from r1.config import load_config
    from r1.train import fit

    run_dir = tmp_path_factory.mktemp("runs") / "digits"
    fit(load_config(ROOT / "configs/cls/digits.yaml", tiny_cls_overrides(run_dir)))
    return run_dir


@pytest.fixture(scope="session")
def trained_mm(tmp_path_factory) -> Path:
    """One tiny trained Sort-of-CLEVR r1_mm run shared by the mm export and mm serving tests."""
    from r1.config import load_config
    from r1.train import fit

    run_dir = tmp_path_factory.mktemp("runs") / "mm"
    fit(load_config(ROOT / "configs/mm/sortofclevr.yaml", [
        f"run.dir={run_dir}", "data.train_images=60", "data.val_images=10", "data.test_images=10",
        "data.batch_size=16", "train.max_steps=4", "train.eval_every=0", "sched.warmup_steps=1", "run.threads=1"]))
    return run_dir
