"""One registry for every model: `register_model`, `build_model`, `list_models`.

A registered entry is a builder `fn(cfg) -> nn.Module` plus its config dataclass (a `model`
variant, see `r1.config.variant`), its family (`cls`, `det`, `lm`, `mm`) and its flavors: named
presets of that config's fields (`tiny`, `small`, ...). Registering a model makes the test
suite exercise it (tests are parametrized over `list_models()`).
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Callable

import torch.nn as nn

from r1.config import ModelConfig, from_dict, to_dict, variant
from r1.errors import ConfigError


@dataclass
class ModelEntry:
    name: str
    family: str
    builder: Callable[[ModelConfig], nn.Module]
    config_cls: type
    flavors: dict[str, dict]
    doc: str


_MODELS: dict[str, ModelEntry] = {}


def register_model(name: str, *, family: str, config: type = ModelConfig, flavors: dict[str, dict]):
    """Decorator for `builder(cfg) -> nn.Module`. `flavors` map a flavor to field values."""
    if "tiny" not in flavors or "small" not in flavors:
        raise ValueError(f"model {name}: flavors must include 'tiny' and 'small'")

    def wrap(builder):
        if name in _MODELS:
            raise ValueError(f"model {name} registered twice")
        variant(ModelConfig, name, flavors)(config)  # parse `model:` sections naming this model with `config`
        _MODELS[name] = ModelEntry(name, family, builder, config, flavors, (builder.__doc__ or "").strip())
        return builder
    return wrap


def _ensure_loaded() -> None:
    import r1.models
    r1.models.load_all()  # registers every family's models


def get_entry(name: str) -> ModelEntry:
    _ensure_loaded()
    if name not in _MODELS:
        raise ConfigError(f"model.name: unknown model {name!r}; allowed: {', '.join(sorted(_MODELS))}")
    return _MODELS[name]


def list_models(pattern: str = "*", family: str | None = None) -> list[str]:
    _ensure_loaded()
    return sorted(n for n, e in _MODELS.items()
                  if fnmatch.fnmatch(n, pattern) and (family is None or e.family == family))


def flavor_preset(name: str, flavor: str) -> dict:
    """Field values of `flavor` for model `name`, with the flavor itself."""
    entry = get_entry(name)
    if flavor not in entry.flavors:
        raise ConfigError(f"model.flavor: unknown flavor {flavor!r} for {name}; "
                          f"allowed: {', '.join(entry.flavors)}")
    return {"flavor": flavor, **entry.flavors[flavor]}


def build_model(cfg: ModelConfig | str, **fields) -> nn.Module:
    """Build a model from its config, or from a name plus field values (flavor='tiny', ...)."""
    if isinstance(cfg, str):
        cfg = from_dict(ModelConfig, {"name": cfg, **fields}, "model")
    elif fields:
        cfg = from_dict(ModelConfig, {**to_dict(cfg), **fields}, "model")
    model = get_entry(cfg.name).builder(cfg)
    model.r1_config = cfg  # what `save_artifact` writes to model.json to rebuild it
    return model
