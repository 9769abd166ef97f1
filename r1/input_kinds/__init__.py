"""Input kinds: what a model takes (image, text, image+text, ...) and everything that depends on it.

An input kind owns reading an HTTP request into a task, running a batch of tasks through a
predictor (in the server's inference thread or process), reading input files for `r1 predict`,
a sample request for load tests, and its request schema. A family names its kind
(`FamilySpec.inputs`); serve, predict and bench dispatch through the kind and never branch on it.

    kind = get_input_kind("image")
    task = await kind.read_request(request, ctx)          # the server's event loop
    results = kind.run_batch(predictor, tasks, cfg)       # ("ok", record) | ("error", status, code, detail)
    inputs = kind.read_files(paths, options)              # r1 predict

A new kind is a subclass of `InputKind` registered with `register_input_kind` (see
tests/test_family_toy.py, which adds one from outside r1/). The built-in kinds register lazily:
naming them costs no import.
"""
from __future__ import annotations

import importlib

from r1.errors import ConfigError
from r1.input_kinds.base import InputKind

_BUILTIN = {"image": "r1.input_kinds.image:ImageKind", "text": "r1.input_kinds.text:TextKind",
            "image+text": "r1.input_kinds.image_text:ImageTextKind"}
_KINDS: dict[str, InputKind] = {}


def register_input_kind(kind: InputKind) -> InputKind:
    if kind.name in _KINDS and type(_KINDS[kind.name]) is not type(kind):
        raise ValueError(f"input kind {kind.name!r} registered twice")
    _KINDS[kind.name] = kind
    return kind


def unregister_input_kind(name: str) -> None:
    """For tests that register a kind of their own."""
    _KINDS.pop(name, None)


def input_kind_names() -> list[str]:
    return sorted(set(_BUILTIN) | set(_KINDS))


def get_input_kind(name: str) -> InputKind:
    if name not in _KINDS and name in _BUILTIN:
        module, _, attr = _BUILTIN[name].partition(":")
        register_input_kind(getattr(importlib.import_module(module), attr)())
    if name not in _KINDS:
        raise ConfigError(f"unknown input kind {name!r}; known: {', '.join(input_kind_names())}")
    return _KINDS[name]


__all__ = ["InputKind", "get_input_kind", "input_kind_names", "register_input_kind", "unregister_input_kind"]
