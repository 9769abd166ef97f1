"""Claiming a run directory: a safe place, owned by R1, used by one process at a time.

A run dir gets a `.r1-run` file when R1 first trains into it: it marks the directory as R1's and is
the lock file. The trainer holds an exclusive `fcntl.flock` on it while it runs; the kernel drops
that lock when the process ends, however it ends (kill -9 included), so a stale file never blocks a
later run. The file names its holder (pid, host, start time, command) for the error a second run sees.

Refused (ConfigError, exit 2): what the output-folder guard refuses (r1/outputs.py: `/`, the home
folder, system folders, a file, another run's folder such as a tune study or a pipeline, a non-empty
folder R1 did not create), a directory held by a live process, and (without --resume) a directory
that already holds a trained model. Accepted: an empty or new directory, a run dir R1 created
(resume, an interrupted run, a pipeline stage directory it re-runs), and run dirs of R1 versions that
wrote no marker (recognised by their layout).
"""
from __future__ import annotations

import datetime
import fcntl
import json
import os
import socket
import sys
from pathlib import Path

from r1.errors import ConfigError
from r1.outputs import MARKER, check_folder

_HELD: dict[str, RunDirLock] = {}  # realpath -> the lock this process holds on it


class RunDirLock:
    """An exclusive flock on `<dir>/.r1-run`; `release()` (or process exit) frees it."""

    def __init__(self, path: Path, fd: int):
        self.path, self.fd = path, fd

    def release(self) -> None:
        if self.fd is not None:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            finally:
                os.close(self.fd)
                self.fd = None
        if _HELD.get(_key(self.path)) is self:
            del _HELD[_key(self.path)]

    def __enter__(self) -> RunDirLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self):
        if getattr(self, "fd", None) is not None:
            os.close(self.fd)


def _key(path: Path) -> str:
    return os.path.realpath(path)


def check_place(run_dir: Path) -> None:
    """The output-folder rules (r1/outputs.py): not the root, the home folder or a system folder, not a
    file, not another run's folder (a tune study, a pipeline, a model folder), not a foreign non-empty one."""
    check_folder(run_dir, "run.dir", "train", reuse=("stage",))


def check_state(run_dir: Path, resume: bool) -> None:
    """`resume` needs checkpoints/last.pt; a fresh run needs a directory without a run or a model."""
    last = run_dir / "checkpoints" / "last.pt"
    if resume and not last.is_file():
        raise ConfigError(f"--resume: no checkpoint at {last}")
    if not resume and last.is_file():
        raise ConfigError(f"run dir {run_dir} already holds a run; pass --resume to continue it "
                          "or choose another run.dir")
    if not resume and (run_dir / "model.safetensors").is_file():
        raise ConfigError(f"run dir {run_dir} already holds a trained model (model.safetensors); choose another "
                          "run.dir")


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text())
        return (f"process {info['pid']} on {info['host']} (started {info['started']}: "
                f"{' '.join(info['argv'])[:120]})")
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def lock(run_dir: Path, kind: str = "train") -> RunDirLock:
    """Create `run_dir` if needed and take its lock; ConfigError naming the holder when it is taken.
    The lock file is the folder's R1 marker: it names the folder's `kind` (r1/outputs.py)."""
    held = _HELD.pop(_key(run_dir), None)
    if held is not None:  # an earlier trainer of this process (finished or failed) on the same dir
        held.release()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(run_dir / MARKER, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise ConfigError(f"run.dir: cannot write to {run_dir} ({err.strerror or err}); choose a writable "
                          "directory") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise ConfigError(f"run dir {run_dir} is in use by {_holder(run_dir / MARKER)}; wait for it to "
                          "finish or choose another run.dir") from None
    info = {"kind": kind, "pid": os.getpid(), "host": socket.gethostname(),
            "started": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
            "argv": [os.path.basename(sys.argv[0]), *sys.argv[1:]]}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
    claimed = _HELD[_key(run_dir)] = RunDirLock(run_dir, fd)
    return claimed


def claim(run_dir: Path, resume: bool, is_main: bool = True) -> RunDirLock | None:
    """Every check, and the lock on rank 0 (the other ranks of a run share its directory and lock)."""
    check_place(run_dir)
    if not is_main:
        check_state(run_dir, resume)
        return None
    held = lock(run_dir)
    try:
        check_state(run_dir, resume)
    except ConfigError:
        held.release()
        raise
    return held
