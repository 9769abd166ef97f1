"""Datasets. `build_data(cfg.data, seed)` returns a `DataBundle` for any registered kind.

Contract every dataset kind follows:
  * `bundle.train/val/test` are torch Datasets whose items are `(input, target)` pairs;
    `bundle.collate(items) -> (inputs, targets)`; the trainer calls `model(inputs, targets)`.
  * Augmentation draws from torch's global RNG; the trainer seeds it per sample
    (`r1.train.sampler`), so data order and augmentation survive an exact resume.
  * `bundle.meta` is JSON-safe and is saved in model.json: it holds what inference needs
    (`classes`, `num_classes`, `preprocess`, a tokenizer path, ...).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from torch.utils.data import Dataset, default_collate

from r1.config import DataConfig, variant
from r1.errors import ConfigError


@dataclass
class DataBundle:
    train: Dataset
    val: Dataset
    test: Dataset | None
    family: str
    meta: dict[str, Any] = field(default_factory=dict)
    collate: Callable = default_collate
    stats: dict[str, int] = field(default_factory=dict)  # e.g. skipped files, reported in metrics.json


def skip_none_collate(items: list):
    """default_collate over the items a dataset could load (it returns None for unreadable ones)."""
    items = [it for it in items if it is not None]
    return default_collate(items) if items else None


_DATA: dict[str, Callable[[DataConfig, int], DataBundle]] = {}


def register_data(name: str, config: type = DataConfig):
    """Decorator for `builder(cfg, seed) -> DataBundle`; `config` is the `data` section's class."""
    def wrap(builder):
        variant(DataConfig, name)(config)
        _DATA[name] = builder
        return builder
    return wrap


def build_data(cfg: DataConfig, seed: int = 0) -> DataBundle:
    DataConfig.load_variants()  # the kinds live in the families' folders (r1/models/<family>/)
    if cfg.name not in _DATA:
        raise ConfigError(f"data.name: unknown dataset {cfg.name!r}; allowed: {', '.join(sorted(_DATA))}")
    return _DATA[cfg.name](cfg, seed)


def _register_all() -> None:
    """Import every module of this package: each registers the dataset kinds it defines."""
    import importlib
    import pkgutil
    for mod in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{mod.name}")


_register_all()
