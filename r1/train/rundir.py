"""Claiming a run directory: a safe place, owned by R1, used by one process at a time.

A run dir gets a `.r1-run` file when R1 first trains into it: it marks the directory as R1's and is
the lock file. The trainer holds an exclusive `fcntl.flock` on it while it runs; the kernel drops
that lock when the process ends, however it ends (kill -9 included), so a stale file never blocks a
later run. The file names its holder (pid, host, start time, command) for the error a second run sees.

Refused (ConfigError, exit 2): `/`, the home directory, a path that is a file, a directory held by a
live process, a non-empty directory R1 did not create, and (without --resume) a directory that
already holds a trained model. Accepted: an empty or new directory, a directory R1 created (resume,
an interrupted run, a pipeline stage directory it re-runs), and run dirs of R1 versions that wrote
no marker (recognised by their layout).
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

MARKER = ".r1-run"
# What a pipeline writes into a stage directory before the trainer runs there.
PIPELINE_FILES = ("stage.pending.json", "stage.json")
# The layout of a run dir written by an R1 without the marker.
LEGACY_LAYOUT = ("config.yaml", "log.txt")

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


def check_location(run_dir: Path) -> None:
    """Refuse places no run belongs: the file system root, the home directory, a file."""
    real = Path(os.path.realpath(run_dir))
    if real == Path(real.anchor):
        raise ConfigError(f"run.dir: {run_dir} is the file system root; choose a directory for this run")
    if real == Path(os.path.realpath(Path.home())):
        raise ConfigError(f"run.dir: {run_dir} is the home directory; choose a directory for this run")
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"run.dir: {run_dir} is a file, not a directory")


def is_r1_dir(run_dir: Path) -> bool:
    """True when R1 created `run_dir`: its marker, a pipeline stage's files, or an older run's layout."""
    return ((run_dir / MARKER).is_file() or any((run_dir / f).is_file() for f in PIPELINE_FILES)
            or all((run_dir / f).exists() for f in LEGACY_LAYOUT))


def check_foreign(run_dir: Path) -> None:
    """A non-empty directory must be one R1 created."""
    entries = sorted(p.name for p in run_dir.iterdir()) if run_dir.is_dir() else []
    if entries and not is_r1_dir(run_dir):
        shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
        count = f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'}"
        raise ConfigError(f"run.dir: {run_dir} is not empty ({count}: {shown}) and is not an R1 run directory; "
                          "choose a new or empty directory")


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


def lock(run_dir: Path) -> RunDirLock:
    """Create `run_dir` if needed and take its lock; ConfigError naming the holder when it is taken."""
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
    info = {"pid": os.getpid(), "host": socket.gethostname(),
            "started": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
            "argv": [os.path.basename(sys.argv[0]), *sys.argv[1:]]}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
    claimed = _HELD[_key(run_dir)] = RunDirLock(run_dir, fd)
    return claimed


def claim(run_dir: Path, resume: bool, is_main: bool = True) -> RunDirLock | None:
    """Every check, and the lock on rank 0 (the other ranks of a run share its directory and lock)."""
    check_location(run_dir)
    check_foreign(run_dir)
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
