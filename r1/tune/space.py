"""The search space: a YAML mapping from dotted config keys to parameter specs.

    optim.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
    model.atss_topk: {type: int, low: 9, high: 45, step: 9}
    data.batch_size: {type: categorical, choices: [8, 16, 32]}

Every key must be a field of the training config: each bound (or choice) is checked by parsing the
config with it, so a typo or an impossible value is a one-line error naming the key.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from r1.config import load_yaml_text, show
from r1.errors import ConfigError

TYPES = ("float", "int", "categorical")
# The study owns where and how each trial runs.
RESERVED = ("run.dir", "run.name", "run.threads")
ALLOWED = {"float": {"type", "low", "high", "log", "step"}, "int": {"type", "low", "high", "log", "step"},
           "categorical": {"type", "choices"}}


@dataclass(frozen=True)
class Param:
    key: str  # dotted config key, also the Optuna parameter name
    type: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple = ()

    def suggest(self, trial) -> Any:
        if self.type == "float":
            return trial.suggest_float(self.key, self.low, self.high, log=self.log, step=self.step)
        if self.type == "int":
            return trial.suggest_int(self.key, self.low, self.high, log=self.log, step=self.step or 1)
        return trial.suggest_categorical(self.key, list(self.choices))

    def corners(self) -> list:
        """Values whose acceptance by the config shows the whole range is valid."""
        return list(self.choices) if self.type == "categorical" else [self.low, self.high]

    def describe(self) -> dict:
        if self.type == "categorical":
            return {"type": self.type, "choices": list(self.choices)}
        out = {"type": self.type, "low": self.low, "high": self.high, "log": self.log}
        return out if self.step is None else {**out, "step": self.step}


def override(key: str, value: Any) -> str:
    """A parameter value as a dotted override the config parser reads back unchanged."""
    if isinstance(value, bool):
        return f"{key}={'true' if value else 'false'}"
    if isinstance(value, float):
        return f"{key}={value!r}"
    return f"{key}={value}"


def shown(key: str, value: Any) -> str:
    """The override as people read it: floats to 4 significant digits (optim.lr=0.002553, not
    0.0025533788451512357). For logs and tables only; best.yaml / best.json keep the exact value."""
    if isinstance(value, float) and not isinstance(value, bool):
        return f"{key}={float(f'{value:.4g}')!r}"
    return override(key, value)


def _number(spec: dict, name: str, where: str, integer: bool) -> float | int:
    value = spec.get(name)
    if isinstance(value, str) and not integer:  # YAML 1.1 reads 1e-4 (no dot) as a string
        try:
            value = float(value)
        except ValueError:
            pass
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok or (isinstance(value, float) and not math.isfinite(value)):
        raise ConfigError(f"{where}.{name}: expected {'an integer' if integer else 'a number'}, got {show(value)}")
    return value


def parse_param(key: str, spec: Any, where: str) -> Param:
    if not isinstance(key, str) or "." not in key or any(not p for p in key.split(".")):
        raise ConfigError(f"{where}: key {show(key)} is not a dotted config key such as optim.lr")
    at = f"{where}: {key}"
    if key in RESERVED:
        raise ConfigError(f"{at}: the study sets {key} for every trial; not searchable")
    if not isinstance(spec, dict):
        raise ConfigError(f"{at}: expected a mapping such as {{type: float, low: 1e-4, high: 1e-2, log: true}}, "
                          f"got {show(spec)}")
    kind = spec.get("type")
    if kind not in TYPES:
        raise ConfigError(f"{at}.type: {show(kind)} is not allowed; allowed: {', '.join(TYPES)}")
    unknown = sorted(set(spec) - ALLOWED[kind])
    if unknown:
        raise ConfigError(f"{at}.{unknown[0]}: unknown for type {kind}; allowed: {', '.join(sorted(ALLOWED[kind]))}")
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{at}.choices: expected a non-empty list, got {show(choices)}")
        if not all(c is None or isinstance(c, (bool, int, float, str)) for c in choices):
            raise ConfigError(f"{at}.choices: only numbers, strings, booleans and null are allowed, got {show(choices)}")
        if len(set(map(repr, choices))) != len(choices):
            raise ConfigError(f"{at}.choices: duplicate values in {show(choices)}")
        return Param(key, kind, choices=tuple(choices))
    integer = kind == "int"
    low, high = _number(spec, "low", at, integer), _number(spec, "high", at, integer)
    if low >= high:
        raise ConfigError(f"{at}: low ({low}) must be below high ({high})")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"{at}.log: expected true or false, got {show(log)}")
    if log and low <= 0:
        raise ConfigError(f"{at}.low: log: true needs low > 0, got {low}")
    step = spec.get("step")
    if step is not None:
        step = _number(spec, "step", at, integer)
        if step <= 0 or step > high - low:
            raise ConfigError(f"{at}.step: expected 0 < step <= high - low ({high - low}), got {step}")
        if log:
            raise ConfigError(f"{at}.step: cannot be combined with log: true")
    return Param(key, kind, float(low) if not integer else low, float(high) if not integer else high,
                 log, step)


def parse_space(data: Any, where: str) -> list[Param]:
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"{where}: expected a non-empty mapping of dotted config keys to parameter specs, "
                          f"e.g. optim.lr: {{type: float, low: 1e-4, high: 1e-2, log: true}}")
    return [parse_param(key, spec, where) for key, spec in data.items()]


def load_space(path: str | Path) -> list[Param]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--space: file not found: {path}")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read ({err})") from None
    return parse_space(load_yaml_text(text, str(path)), str(path))


def check_against_config(params: list[Param], config: str | Path, overrides: list[str], where: str) -> None:
    """Parse the config with every bound / choice of every parameter: keys and values must be accepted."""
    from r1.config import load_config

    for p in params:
        for value in p.corners():
            try:
                load_config(config, [*overrides, override(p.key, value)])
            except ConfigError as err:
                raise ConfigError(f"{where}: {p.key}: value {show(value)} is not accepted by {config}: {err}") from None
