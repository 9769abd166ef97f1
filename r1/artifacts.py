"""The one loader for trained models: a run dir or a `model.safetensors` (+ `model.json` beside it).

`model.json` holds what rebuilds the model without unpickling anything: the model config,
the data meta (classes, preprocessing, tokenizer...), the data config, and the family.
Format versions: `r1-model/2` (current) adds `r1_version` (the R1 that wrote it) and
`weights_sha256` to `r1-model/1`; both load.
"""
from __future__ import annotations

import json
import os
import pickle
import zipfile
from pathlib import Path

import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load_file, save_model

from r1.config import ModelConfig, from_dict, show, to_dict
from r1.errors import ConfigError, DataError
from r1.registry import build_model, get_entry
from r1.version import __version__

FORMAT = "r1-model/2"
READABLE = ("r1-model/1", FORMAT)  # model.json versions this R1 loads


def resolve_weights(path: str | Path) -> Path:
    """Run dir -> its model.safetensors; a .safetensors path is returned as is."""
    p = Path(path)
    if p.is_dir():
        p = p / "model.safetensors"
    if p.suffix != ".safetensors" or not p.is_file():
        raise ConfigError(f"model not found: {path} (expected a run directory or a .safetensors file)")
    return p


def save_artifact(model: nn.Module, out_dir: Path, meta: dict, data_cfg: dict | None = None,
                  state_dict: dict | None = None) -> Path:
    """Write model.safetensors + model.json into `out_dir`; `state_dict` overrides the model's (e.g. EMA)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if state_dict is not None:
        model = _with_weights(model, state_dict)
    save_model(model, str(out_dir / "model.safetensors"))
    as_created(out_dir / "model.safetensors")
    cfg: ModelConfig = model.r1_config
    info = {"format": FORMAT, "r1_version": __version__, "family": get_entry(cfg.name).family,
            "model": to_dict(cfg), "meta": meta, "data": data_cfg or {},
            "weights_sha256": sha256_file(out_dir / "model.safetensors")}
    (out_dir / "model.json").write_text(json.dumps(info, indent=2))
    return out_dir / "model.safetensors"


def as_created(path: Path) -> Path:
    """Give `path` the mode `open()` gives a new file (0666 less the umask; 0644 usually). safetensors
    writes 0600, which a server running as another user (the container's uid 10001 reading a mounted
    run dir) cannot read, while every other file of the run dir is readable."""
    path.chmod(0o666 & ~_umask())
    return path


def _umask() -> int:
    try:  # Linux: read it without changing it (os.umask sets it, racing other threads)
        with open("/proc/self/status") as f:
            return next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError):
        mask = os.umask(0o022)
        os.umask(mask)
        return mask


def sha256_file(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _with_weights(model: nn.Module, state_dict: dict) -> nn.Module:
    import copy
    clone = copy.deepcopy(model)
    clone.load_state_dict(state_dict)
    return clone


def read_info(path: str | Path) -> dict:
    """model.json beside the weights, checked: DataError (exit 3) naming the file and the problem when it
    is not JSON, not an object, lacks a key, or names a family other than its model's."""
    weights = resolve_weights(path)
    info_path = weights.with_name("model.json")
    if not info_path.is_file():
        raise ConfigError(f"{info_path}: missing; it holds the model config needed to rebuild {weights.name}")
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise DataError(f"{info_path}: not valid JSON ({_first_line(err)})") from None
    if not isinstance(info, dict):
        raise DataError(f"{info_path}: expected a JSON object, got {type(info).__name__}")
    if info.get("format") not in READABLE:
        raise ConfigError(f"{info_path}: unknown format {show(info.get('format'))}; this R1 ({__version__}) reads "
                          f"{', '.join(READABLE)}")
    _check_info(info, info_path)
    return info


def _check_info(info: dict, where: Path) -> None:
    kinds = {"family": str, "model": dict, "meta": dict}
    for key, kind in kinds.items():
        if not isinstance(info.get(key), kind):
            raise DataError(f"{where}: key {key!r} missing or not a{'n object' if kind is dict else ' string'} "
                            f"(got {show(info.get(key))})")
    if not isinstance(info["model"].get("name"), str):
        raise DataError(f"{where}: model.name missing")
    try:
        family = get_entry(info["model"]["name"]).family
    except ConfigError as err:
        raise DataError(f"{where}: {err}") from None
    if info["family"] != family:
        raise DataError(f"{where}: family {show(info['family'])} does not match model {info['model']['name']}, "
                        f"a {family}-family model")
    size = info["meta"].get("preprocess", {}).get("size") if isinstance(info["meta"].get("preprocess"), dict) else None
    if size is not None and not (isinstance(size, list) and len(size) == 2
                                 and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)):
        raise DataError(f"{where}: meta.preprocess.size must be two positive integers [height, width], got "
                        f"{show(size)}")


def load_model(path: str | Path, device: str | torch.device = "cpu", **fields) -> nn.Module:
    """Rebuild and load a trained model; returns it in eval mode with `.r1_meta` and `.r1_family`.
    `fields` change inference-time model settings, e.g. `active_width=0.5` for a slimmable model."""
    info = read_info(path)
    cfg = from_dict(ModelConfig, {**info["model"], **fields}, "model")
    model = build_model(cfg)
    load_weights(model, resolve_weights(path), strict=True)
    model.r1_meta, model.r1_family, model.r1_data = info["meta"], info["family"], info.get("data", {})
    return model.to(device).eval()


def load_weights(model: nn.Module, path: str | Path, strict: bool = False) -> tuple[list[str], list[str]]:
    """Load a .safetensors / .pt state dict or a run dir. Non-strict: tensors whose shape differs
    (e.g. a classifier for another class count) are skipped and reported. Returns (missing, skipped)."""
    p = Path(path)
    if p.is_dir() or p.suffix == ".safetensors":
        state = read_safetensors(resolve_weights(p))
    elif p.is_file():
        state = load_pickle_safely(p)
        state = state.get("model", state.get("state_dict", state)) if isinstance(state, dict) else state
    else:
        raise ConfigError(f"weights not found: {path}")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DataError(f"{path}: not a state dict of tensors")
    own = model.state_dict()
    skipped = [k for k, v in state.items() if k not in own or own[k].shape != v.shape]
    if strict and skipped:
        raise ConfigError(f"{path}: weights do not fit the model (e.g. {skipped[0]})")
    usable = {k: v for k, v in state.items() if k not in skipped}
    missing, _ = model.load_state_dict(usable, strict=False)
    if strict and missing:
        # Tied weights are stored once by safetensors; anything else missing is an error.
        really = [k for k in missing if not _is_tied(model, k, usable)]
        if really:
            raise ConfigError(f"{path}: missing weights (e.g. {really[0]})")
    return list(missing), skipped


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """A .safetensors file's tensors; DataError naming the file when it is truncated or not safetensors,
    or when this user may not read it (safetensors then says "No such file or directory")."""
    if Path(path).is_file() and not os.access(path, os.R_OK):
        st = Path(path).stat()
        raise DataError(f"{path}: permission denied (mode {st.st_mode & 0o777:o}, owner uid {st.st_uid}; this process "
                        f"runs as uid {os.getuid()}); `chmod a+r` it (earlier R1 versions wrote model.safetensors as 600)")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise DataError(f"{path}: unreadable safetensors file ({_first_line(err)}); truncated or not "
                        "written by safetensors?") from None


def load_pickle_safely(path: Path):
    """`torch.load(weights_only=True)`: tensors and plain containers only, never code; DataError naming the
    file when it holds anything else (a crafted pickle) or is damaged."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        why = next((line.strip() for line in str(err).splitlines()  # torch names the blocked global there
                    if "GLOBAL" in line), "it holds more than tensors and containers")
        raise DataError(f"{path}: refused: not a plain tensor checkpoint, loading it would run pickled code "
                        f"({why[:160]})") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as err:
        raise DataError(f"{path}: unreadable checkpoint ({_first_line(err)})") from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:160] if text else type(err).__name__


def _is_tied(model: nn.Module, key: str, loaded: dict) -> bool:
    params = dict(model.named_parameters(remove_duplicate=False))
    if key not in params:
        return False
    return any(params[key] is params.get(k) for k in loaded if k != key)
