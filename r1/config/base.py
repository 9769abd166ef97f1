"""Building blocks of every config section: documented fields (`opt`), variant tables, `show`.

A *variant* section (`model`, `data`) picks its dataclass by its `name` key: each model or dataset
registers the dataclass of the fields it understands with `variant`, and a model also its flavors
(named presets of those fields) there. That table is the only one: the model registry reads it.
"""
from __future__ import annotations

import copy
import reprlib
from dataclasses import field
from typing import Any


def opt(default: Any, help: str, *, choices: tuple | None = None, min: float | None = None,
        max: float | None = None) -> Any:
    """A documented config field. Mutable defaults (lists, dicts) are copied per instance."""
    meta = {"help": help, "choices": choices, "min": min, "max": max}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return field(default=default, metadata=meta)


MESSAGE_VALUE_CHARS = 200  # a value quoted in an error message is cut to this many characters


def show(value: Any, limit: int = MESSAGE_VALUE_CHARS) -> str:
    """`repr(value)` for an error message, shortened: a config value can be huge (or recursive)."""
    short = reprlib.Repr()
    short.maxlevel, short.maxstring, short.maxother = 3, limit, limit
    short.maxlist = short.maxtuple = short.maxdict = short.maxset = 8
    text = short.repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


class Variant:
    """Base for sections chosen by their `name` field. Subclasses register with `variant`."""

    _variants: dict[str, type] = {}
    _flavors: dict[str, dict[str, dict]] = {}

    @classmethod
    def load_light_variants(cls) -> None:
        """Import the torch-free modules declaring variant config classes (`r1/models/<family>/config.py`)."""
        import r1.models
        r1.models.light_configs()

    @classmethod
    def load_variants(cls) -> None:
        """Import every module that registers a variant (the families' models and data kinds; may import torch)."""
        import r1.models
        r1.models.load_all()

    @classmethod
    def find_variant(cls, name: str) -> type | None:
        """The config class registered as `name`: from the light modules if declared there, else after
        importing every variant's module."""
        if name not in cls._variants:
            cls.load_light_variants()
        if name not in cls._variants:
            cls.load_variants()
        return cls._variants.get(name)

    @classmethod
    def check_variant(cls, name: str, flavors: dict[str, dict] | None) -> None:
        """Raise where variant `name` is declared incompletely (a section that requires flavors says so here)."""

    @classmethod
    def presets(cls, data: dict) -> dict:
        """Field values implied by `data` (e.g. a model flavor); explicit keys override them."""
        return {}


def variant(base: type, name: str, flavors: dict[str, dict] | None = None):
    """Class decorator: register dataclass `cls` as the `name` variant of section `base`, with its
    `flavors` (named presets of its fields) where the section has them."""
    base.check_variant(name, flavors)

    def wrap(cls):
        base._variants[name] = cls
        if flavors is not None:
            base._flavors[name] = flavors
        return cls
    return wrap


def variant_base(cls):
    """Class decorator marking a Variant base that gets its own registration tables."""
    cls._variants = {}
    cls._flavors = {}
    return cls
