"""Where R1 may write: one guard for every command that writes (train, tune, pipeline, export in every
format, data inspect|clean|convert, predict --out / --coco-json, eval --json, bench --json).

    check_folder(path, "--out", kind="predict")              # early: every rule, nothing created
    folder = output_folder(path, "--out", kind="predict")   # when writing: checked, created, marked as R1's
    check_file(path, "--json")                               # early: every rule, nothing created
    write_text(path, text, "--json")                         # checked again, written, recorded
    record_file(path)                                        # (files others write) R1 wrote it: replaceable

A folder destination is refused when it is the file system root, the home folder, a system folder
or inside one, a file, another run's folder (an R1 folder of another kind, or a folder holding a
model.json that this command did not create for this output), or a non-empty folder R1 did not
create. R1 marks the folders it creates with a `.r1-run` file naming their kind (`train`, `tune`,
`pipeline`, `predict`, ...), so a command re-run into its own folder works (`predict --out drawn/`
twice). A file destination is refused inside a system folder, when it is a folder, and when it
exists and R1 did not write it: R1 records the files it writes in `.r1-outputs` beside them (name,
size and modification time), and replaces only those, unchanged since.

System folders: /bin /boot /dev /etc /lib* /proc /sbin /sys /usr /var (/tmp and /var/tmp are
fine), unless the destination lies in the home folder or the current folder that is inside one
(a home in /var/lib, a container's /usr/src/app); /proc /sys /dev /boot are never fine.

Every refusal is a ConfigError (exit 2), one line: `FLAG: PATH is WHAT IS WRONG; WHAT IS ALLOWED`.
"""
from __future__ import annotations

import datetime
import fcntl
import json
import os
import sys
from pathlib import Path

from r1.errors import ConfigError

MARKER = ".r1-run"  # in every folder R1 creates; also the lock file of a run (r1/train/rundir.py)
LEDGER = ".r1-outputs"  # the files R1 wrote into a folder it does not own
SYSTEM = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/sbin", "/sys",
          "/usr", "/var")
NEVER = ("/proc", "/sys", "/dev", "/boot")  # no home or working folder makes these fine
SCRATCH = ("/var/tmp",)
# what a pipeline writes into a stage folder before a stage runs there, and an older R1's run layout
STAGE_FILES = ("stage.pending.json", "stage.json")
LEGACY_RUN = ("config.yaml", "log.txt")


def _real(path: Path | str) -> str:
    return os.path.realpath(os.path.expanduser(str(path)))


def _inside(real: str, folder: str) -> bool:
    return real == folder or real.startswith(folder.rstrip("/") + "/")


def _system_folder(real: str) -> str | None:
    """The system folder `real` lies in (None: none, or an allowed place within one)."""
    for name in SYSTEM:
        for top in dict.fromkeys((name, _real(name))):
            if not _inside(real, top) or any(_inside(real, _real(s)) for s in SCRATCH):
                continue
            if name not in NEVER:
                for own in (_real(Path.home()), _real(os.getcwd())):
                    if own not in (_real(s) for s in SYSTEM) and own != "/" and _inside(real, own):
                        return None
            return name
    return None


def check_location(path: Path | str, flag: str) -> str:
    """Refuse the file system root, the home folder and system folders; -> the real path."""
    real = _real(path)
    if real == "/":
        raise ConfigError(f"{flag}: {path} is the file system root; choose a folder of its own for this output")
    if real == _real(Path.home()):
        raise ConfigError(f"{flag}: {path} is the home folder; choose a folder of its own for this output")
    system = _system_folder(real)
    if system is not None:
        where = "a system folder" if real == _real(system) else f"inside the system folder {system}"
        raise ConfigError(f"{flag}: {path} is {where}; choose a place elsewhere (e.g. under the current folder, "
                          "your home folder or /tmp)")
    return real


# ----------------------------------------------------------------------------- folders
def folder_kind(folder: Path) -> str | None:
    """What R1 made of `folder`: its marker's kind; an older R1's run or tune study by their layout;
    "stage" (a pipeline stage folder before its run); "model" (a model.json without a marker); None:
    nothing of R1's."""
    marker = folder / MARKER
    if marker.is_file():
        try:
            kind = json.loads(marker.read_text() or "{}").get("kind")
        except (OSError, ValueError, AttributeError):
            kind = None
        if isinstance(kind, str) and kind:
            return kind
        return "tune" if (folder / "tune.db").exists() or (folder / "trials").is_dir() else "train"
    if any((folder / f).is_file() for f in STAGE_FILES):
        return "stage"
    if all((folder / f).exists() for f in LEGACY_RUN):
        return "train"
    if (folder / "model.json").is_file():
        return "model"
    return None


def _pipeline_layout(folder: Path) -> bool:
    """An older R1's pipeline folder: stage folders holding stage.json or stage.pending.json."""
    try:
        return any(any((d / f).is_file() for f in STAGE_FILES) for d in folder.iterdir() if d.is_dir())
    except OSError:
        return False


def _entries(folder: Path) -> list[str]:
    try:
        return sorted(p.name for p in folder.iterdir())
    except OSError:
        return []


def check_folder(path: Path | str, flag: str, kind: str, reuse: tuple[str, ...] = (), fresh: bool = False) -> Path:
    """Every folder rule, nothing created. `kind`: what this command makes of the folder (a folder of that
    kind, or of a kind in `reuse`, may be used again); `fresh`: only a new or empty folder will do."""
    path = Path(path)
    check_location(path, flag)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{flag}: {path} is a file, not a folder; choose a folder")
    entries = [e for e in _entries(path) if e not in (MARKER, LEDGER)] if path.is_dir() else []
    if not entries:
        return path
    found = folder_kind(path)
    if found is None and kind == "pipeline" and _pipeline_layout(path):
        found = "pipeline"
    if found is not None and found not in (kind, *reuse):
        what = "an R1 model's folder (model.json)" if found == "model" else f"another R1 run's folder (a {found} folder)"
        raise ConfigError(f"{flag}: {path} is {what}; choose a new or empty folder for this {kind} output")
    if found is None or fresh:
        shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
        count = f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'}"
        why = "R1 did not create it" if found is None else f"holds an earlier {kind} output"
        raise ConfigError(f"{flag}: {path} is not empty ({count}: {shown}) and {why}; choose a new or empty folder")
    return path


def mark_folder(folder: Path, kind: str, info: dict | None = None) -> None:
    """Write the marker naming `kind` (and `info`) unless the folder has one."""
    marker = folder / MARKER
    if marker.is_file() and marker.stat().st_size:
        return
    body = {"kind": kind, "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
            "argv": [os.path.basename(sys.argv[0]), *sys.argv[1:]], **(info or {})}
    marker.write_text(json.dumps(body) + "\n")


def output_folder(path: Path | str, flag: str, kind: str, reuse: tuple[str, ...] = (), fresh: bool = False) -> Path:
    """`check_folder`, then create the folder and mark it as R1's (`kind`)."""
    path = check_folder(path, flag, kind, reuse, fresh)
    try:
        path.mkdir(parents=True, exist_ok=True)
        mark_folder(path, kind)
    except OSError as err:
        raise ConfigError(f"{flag}: cannot write to {path} ({err.strerror or err}); choose a writable folder") from None
    return path


# ----------------------------------------------------------------------------- files
def _ledger(folder: Path) -> dict:
    try:
        data = json.loads((folder / LEDGER).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _stamp(path: Path) -> dict:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def written_by_r1(path: Path) -> bool:
    """True when `.r1-outputs` beside `path` records it as written by R1, unchanged since."""
    real = Path(_real(path))
    return _ledger(real.parent).get(real.name) == _stamp(real)


def check_file(path: Path | str, flag: str) -> Path:
    """Every file rule, nothing created (a command checks before its work, and writes after). -> the path."""
    path = Path(path)
    check_location(path, flag)
    if path.is_dir():
        raise ConfigError(f"{flag}: {path} is a folder; give a file path")
    if path.exists() and not written_by_r1(path):
        raise ConfigError(f"{flag}: {path} exists and R1 did not write it; choose a new file name "
                          "(R1 replaces only files it wrote)")
    parent = Path(os.path.abspath(path)).parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent  # the folders a write creates: the nearest one that exists must take them
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise ConfigError(f"{flag}: cannot write to {parent} ({'a file' if parent.exists() and not parent.is_dir() else 'not writable'}); "
                          "choose a writable folder")
    return path


def output_file(path: Path | str, flag: str) -> Path:
    """`check_file`, then create its folder (just before writing)."""
    path = check_file(path, flag)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"{flag}: cannot create {path.parent} ({err.strerror or err}); choose a writable "
                          "folder") from None
    return path


def record_file(*paths: Path | str) -> None:
    """Record files R1 just wrote (in `.r1-outputs` beside each), so that a re-run may replace them."""
    by_folder: dict[Path, list[Path]] = {}
    for p in paths:
        real = Path(_real(p))
        if real.is_file():
            by_folder.setdefault(real.parent, []).append(real)
    for folder, files in by_folder.items():
        try:
            fd = os.open(folder / LEDGER, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            continue  # a folder R1 may write a file into but not its ledger: the file is then not replaced
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            data = _ledger(folder)
            data.update({f.name: _stamp(f) for f in files})
            data = {k: v for k, v in data.items() if (folder / k).is_file()}
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(data, indent=1).encode(), 0)
        finally:
            os.close(fd)


def write_text(path: Path | str, text: str, flag: str) -> None:
    """Write an output file (the rules checked again: `output_file`) and record it."""
    output_file(path, flag).write_text(text)
    record_file(path)
