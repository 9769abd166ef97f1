"""Runtimes and artifacts: which runtime a file runs in, which family an artifact holds, and the ONNX
export cached in a run dir (keyed by the weights' hash, made on first use)."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Callable

from r1.command_sections import RUNTIMES  # declared torch-free, where the commands' help reads them
from r1.errors import ConfigError
from r1.family import get_family

log = logging.getLogger(__name__)


def infer_runtime(path: str | Path) -> str:
    suffix = Path(path).suffix
    return {".onnx": "onnx", ".engine": "tensorrt", ".plan": "tensorrt"}.get(suffix, "torch")


def check_runtime(family: str, runtime: str) -> None:
    """ConfigError unless `runtime` exists and the family's predictor can use it."""
    if runtime not in RUNTIMES:
        raise ConfigError(f"--runtime: {runtime!r} is not allowed; allowed: {', '.join(RUNTIMES)}")
    spec = get_family(family)
    if runtime not in spec.runtimes:
        allowed = f"the {spec.runtimes[0]} runtime" if len(spec.runtimes) == 1 else ", ".join(spec.runtimes)
        raise ConfigError(f"--runtime {runtime}: family {family!r} runs with {allowed} only")


def artifact_family(path: str | Path) -> str:
    """The family of a run dir, .safetensors, .onnx or TensorRT engine (from its R1 metadata)."""
    kind = infer_runtime(path)
    if kind == "onnx":
        from r1.onnx.graph import read_onnx_meta
        return read_onnx_meta(path)["r1.family"]
    if kind == "tensorrt":
        meta = Path(path).with_suffix(".json")
        if not meta.is_file():
            raise ConfigError(f"{path}: no {meta.name} beside the engine (written by `r1 export --format tensorrt`)")
        return json.loads(meta.read_text())["r1.family"]
    from r1.artifacts import read_info
    return read_info(path)["family"]


def artifact_info(path: str | Path) -> dict:
    """model.json's content for a run dir / .safetensors; the same fields from an .onnx's metadata."""
    if infer_runtime(path) == "onnx":
        from r1.onnx.graph import read_onnx_meta
        props = read_onnx_meta(path)
        return {"family": props["r1.family"], "meta": json.loads(props["r1.meta"])}
    from r1.artifacts import read_info
    return read_info(path)


# ---------------------------------------------------------------------- the ONNX cache of a run dir
def weights_hash(path: str | Path) -> str:
    """The weights file's sha256 (first 16 hex digits), hashed afresh (a few ms): the key of a run's
    cached exports, so replaced weights never meet a stale export."""
    from r1.artifacts import resolve_weights, sha256_file

    return sha256_file(resolve_weights(path))[:16]


def onnx_file(path: str | Path) -> Path:
    """An .onnx path as is; a run dir or .safetensors -> its ONNX export, cached beside the weights
    as `onnx/model-<weights hash>.onnx` (exported on first use; a temporary file where the run dir
    is read-only). A `model.onnx` that `r1 export` wrote beside the weights from these same weights
    with the default settings is used instead of exporting again (linked into the cache)."""
    if infer_runtime(path) == "onnx":
        return Path(path)

    from r1.artifacts import resolve_weights, sha256_file
    from r1.onnx.export import export_onnx, same_export

    weights = resolve_weights(path)
    sha = sha256_file(weights)
    out = weights.parent / "onnx" / f"model-{sha[:16]}.onnx"
    if out.is_file():
        log.info("onnx: reusing %s", out)
        return out
    exported = weights.parent / "model.onnx"
    if exported.is_file() and same_export(exported, sha):
        log.info("onnx: reusing %s (written by `r1 export` from these weights)", exported)
        return link_or_copy(exported, out) or exported
    return write_cached(out, lambda tmp: export_onnx(path, tmp), f"onnx: exporting {path}")


def link_or_copy(src: Path, dst: Path) -> Path | None:
    """`dst` as a hard link to `src` (one file on disk), else a copy; None where neither can be written
    (a read-only run dir)."""
    import shutil

    try:
        dst.parent.mkdir(exist_ok=True)
        tmp = dst.with_name(f".{dst.name}.{os.getpid()}")
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        tmp.replace(dst)
        return dst
    except OSError:
        return None


ONNX_RUNTIMES = ("onnx", "onnx-int8")  # the runtimes of the predictors that run a family's own ONNX graph


def open_family_onnx(path: str | Path, runtime: str | None, threads: int, family: str, key: str,
                     what: str) -> tuple[str, Path, dict]:
    """What every own-graph ONNX predictor's load() starts with: `runtime` (None: "onnx") is one of
    ONNX_RUNTIMES, `threads` >= 1, and `path` (a run dir: its cached export, made on first use) holds
    `family`'s export, i.e. metadata `r1.family` == family and a `key` entry. -> (runtime, file, metadata)."""
    from r1.onnx.graph import read_onnx_meta

    runtime = runtime or "onnx"
    if runtime not in ONNX_RUNTIMES:
        raise ConfigError(f"--runtime {runtime}: not an onnxruntime runtime; allowed: {', '.join(ONNX_RUNTIMES)}")
    if threads < 1:
        raise ConfigError(f"threads: must be >= 1, got {threads}")
    fp = Path(onnx_file(path))
    props = read_onnx_meta(fp)
    if props.get("r1.family") != family or key not in props:
        raise ConfigError(f"{path}: not a {what} ONNX export (r1.family={props.get('r1.family')!r})")
    return runtime, fp, props


def write_cached(out: Path, write: Callable[[Path], object], what: str) -> Path:
    """Make the cache file `out` with `write(tmp)` into a scratch file beside it, then move it into
    place atomically (a concurrent reader never sees a half-written file); where `out`'s folder is
    read-only, write to a temporary file instead, every time. Returns the file written."""
    import tempfile

    try:
        out.parent.mkdir(exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".r1-write-", dir=out.parent)) / out.name
    except OSError:
        tmp = out = Path(tempfile.mkdtemp(prefix="r1-onnx-")) / out.name
    from r1.onnx.graph import quiet_tools

    log.info("%s (first use; cached as %s)", what, out)
    with quiet_tools():
        write(tmp)
    if tmp != out:
        tmp.replace(out)
        tmp.parent.rmdir()
    return out
