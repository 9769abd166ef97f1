"""One registry for every model: `register_model`, `build_model`, `list_models`.

A registered entry is a builder `fn(cfg) -> nn.Module` plus its config dataclass and its family
(`cls`, `det`, `lm`, `mm`). The config class and the model's flavors (named presets of its fields:
`tiny`, `small`, ...) are declared once, torch-free, with `variant(ModelConfig, name, flavors=...)`
(in the family's `config.py`); the registry reads that table. Registering a model makes the test
suite exercise it (tests are parametrized over `list_models()`).
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Callable

import torch.nn as nn

from r1.config import ModelConfig, from_dict, to_dict
from r1.errors import ConfigError


@dataclass
class ModelEntry:
    name: str
    family: str
    builder: Callable[[ModelConfig], nn.Module]
    config_cls: type
    doc: str

    @property
    def flavors(self) -> dict[str, dict]:
        """Flavor -> field values: the table declared with the model's config variant."""
        return ModelConfig._flavors[self.name]


_MODELS: dict[str, ModelEntry] = {}


def register_model(name: str, *, family: str, config: type):
    """Decorator for `builder(cfg) -> nn.Module`. `config` is the class declared for `name` with
    `variant(ModelConfig, name, flavors=...)`, which also holds the model's flavors."""
    if ModelConfig._variants.get(name) is not config:
        raise ValueError(f"model {name}: declare {config.__name__} first with "
                         f"variant(ModelConfig, {name!r}, flavors=...) (its flavors live there)")

    def wrap(builder):
        if name in _MODELS:
            raise ValueError(f"model {name} registered twice")
        _MODELS[name] = ModelEntry(name, family, builder, config, (builder.__doc__ or "").strip())
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
    """Field values of `flavor` for registered model `name`, with the flavor itself."""
    get_entry(name)
    return ModelConfig.flavor_preset(name, flavor)


def build_model(cfg: ModelConfig | str, **fields) -> nn.Module:
    """Build a model from its config, or from a name plus field values (flavor='tiny', ...)."""
    if isinstance(cfg, str):
        cfg = from_dict(ModelConfig, {"name": cfg, **fields}, "model")
    elif fields:
        cfg = from_dict(ModelConfig, {**to_dict(cfg), **fields}, "model")
    model = get_entry(cfg.name).builder(cfg)
    model.r1_config = cfg  # what `save_artifact` writes to model.json to rebuild it
    return model
