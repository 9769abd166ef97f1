"""Dotted overrides (`optim.lr=3e-4`) and `load_config`: a YAML file plus overrides -> a validated config."""
from __future__ import annotations

import copy
import typing
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml

from r1.config.base import Variant, show
from r1.config.files import BudgetLoader, YAMLTooLarge, read_yaml
from r1.config.parse import from_dict
from r1.config.sections import Config
from r1.errors import ConfigError


def parse_override(text: str) -> tuple[list[str], Any]:
    """`train.lr=3e-4` -> (['train', 'lr'], 0.0003). Values are parsed as YAML scalars."""
    if "=" not in text:
        raise ConfigError(f"override {show(text)}: expected key=value, e.g. optim.lr=3e-3")
    key, raw = text.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {show(text)}: empty key")
    try:
        value = yaml.load(raw, Loader=BudgetLoader) if raw != "" else ""
    except YAMLTooLarge as err:
        raise ConfigError(f"override {show(text)}: refused: {err}") from None
    except yaml.YAMLError:
        value = raw
    except (ValueError, RecursionError) as err:  # e.g. an integer of more than 4300 digits
        raise ConfigError(f"override {show(text)}: refused: {show(str(err).split(';')[0] or 'nested too deeply')}") from None
    if isinstance(value, bool) and raw.strip().lower() not in ("true", "false"):
        value = raw.strip()  # train.amp=off is the word "off"; bool fields still take on/off/yes/no
    if isinstance(value, str) and any(c.isdigit() for c in raw):
        try:  # YAML 1.1 reads "3e-3" as a string; scientific notation is a number here.
            value = float(raw)
        except ValueError:
            pass
    return key.split("."), value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    data = copy.deepcopy(data)
    parsed = [parse_override(text) for text in overrides]
    # Variant switches (`model.name=...`) first, so the other overrides land in the new variant.
    parsed.sort(key=lambda kv: kv[0][-1] != "name")
    variants = {f.name for f in fields(Config) if issubclass(typing.get_type_hints(Config)[f.name], Variant)}
    for path, value in parsed:
        text = ".".join(path)
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {show(text)}: {part} is not a section")
        if path[-1] == "name" and len(path) == 2 and path[0] in variants and node.get("name", value) != value:
            # Switching a variant drops the old variant's fields that the new one may not know.
            node.clear()
        node[path[-1]] = value
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                cls: type = Config) -> Any:
    """YAML file (optional) + dotted overrides -> validated `cls` instance."""
    data = read_yaml(path) if path else {}
    data = apply_overrides(data, overrides or [])
    return from_dict(cls, data)
