"""Config files: YAML read safely (bounded alias expansion), `_base_` includes merged, configs saved."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from r1.config.base import show
from r1.config.parse import to_dict
from r1.errors import ConfigError


def _deep_merge(base: dict, top: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in top.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            # A different variant name replaces the section instead of merging into it.
            if "name" in v and v["name"] != out[k].get("name"):
                out[k] = copy.deepcopy(v)
            else:
                out[k] = _deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


MAX_YAML_NODES = 100_000  # nodes a YAML document may expand to, aliases counted at every use


class YAMLTooLarge(yaml.YAMLError):
    pass


class BudgetLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a document whose aliases expand past MAX_YAML_NODES nodes (an
    "alias bomb": 500 bytes that expand to 10^9 list items) or refer to themselves."""

    def compose_document(self):
        node = super().compose_document()
        _expanded_size(node, {}, set())
        return node


def _expanded_size(node: yaml.Node, sizes: dict[int, int], open_: set[int]) -> int:
    """Nodes of `node` with every alias expanded, counted without expanding (shared nodes counted once
    per use, from `sizes`); YAMLTooLarge past the budget or on a node that contains itself."""
    if id(node) in sizes:
        return sizes[id(node)]
    if id(node) in open_:
        raise YAMLTooLarge("a YAML alias refers to a node that contains it (recursive structure)")
    open_.add(id(node))
    if isinstance(node, yaml.MappingNode):
        children = [n for pair in node.value for n in pair]
    elif isinstance(node, yaml.SequenceNode):
        children = node.value
    else:
        children = []
    total = 1 + sum(_expanded_size(child, sizes, open_) for child in children)
    open_.discard(id(node))
    if total > MAX_YAML_NODES:
        raise YAMLTooLarge(f"aliases expand the document past {MAX_YAML_NODES} values")
    sizes[id(node)] = total
    return total


def load_yaml_text(text: str, where: str) -> Any:
    """YAML text -> Python data (safe types only, bounded alias expansion); ConfigError naming `where`."""
    try:
        return yaml.load(text, Loader=BudgetLoader)
    except YAMLTooLarge as err:
        raise ConfigError(f"{where}: refused: {err}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{where}{line}: invalid YAML ({show(getattr(err, 'problem', None) or err)})") from None
    except RecursionError:
        raise ConfigError(f"{where}: refused: YAML nested too deeply") from None
    except ValueError as err:  # a constructor's own limit, e.g. an integer of more than 4300 digits
        raise ConfigError(f"{where}: refused: {show(str(err).split(';')[0])}") from None


def read_yaml(path: str | Path, _chain: tuple[Path, ...] = ()) -> dict:
    """Read a YAML mapping, resolving `_base_: other.yaml` (or a list of files, merged in order; paths
    relative to the file) by deep merge: the file's own keys win."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    real = path.resolve()
    if real in _chain:
        cycle = " -> ".join(p.name for p in (*_chain[_chain.index(real):], real))
        raise ConfigError(f"{path}: _base_ include cycle ({cycle})")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read ({err})") from None
    data = load_yaml_text(text, str(path)) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    base = data.pop("_base_", None)
    bases = [base] if isinstance(base, str) else base
    if base is not None and not (isinstance(bases, list) and all(isinstance(b, str) and b for b in bases)):
        raise ConfigError(f"{path}: _base_: expected a file name or a list of file names, got {show(base)}")
    merged: dict = {}
    for name in bases or []:
        merged = _deep_merge(merged, read_yaml(path.parent / name, (*_chain, real)))
    return _deep_merge(merged, data) if merged else data


def save_config(cfg: Any, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
