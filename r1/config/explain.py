"""`r1 config explain`: one line per field (dotted key, type, default, help, allowed values)."""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import fields, is_dataclass

from r1.config.base import Variant, show
from r1.config.parse import type_name
from r1.config.sections import Config
from r1.errors import ConfigError


def explain(cls: type = Config, prefix: str = "") -> list[str]:
    """One line per field: dotted key, type, default, help (and allowed values / bounds)."""
    lines = []
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        key, tp = f"{prefix}{f.name}", hints[f.name]
        if is_dataclass(tp):
            lines += _explain_section(key, tp)
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        extra = []
        if f.metadata.get("choices"):
            extra.append("one of " + "|".join(map(str, f.metadata["choices"])))
        if f.metadata.get("min") is not None:
            extra.append(f">= {f.metadata['min']}")
        if f.metadata.get("max") is not None:
            extra.append(f"<= {f.metadata['max']}")
        tail = f" [{'; '.join(extra)}]" if extra else ""
        lines.append(f"  {key}: {type_name(tp)} = {default!r}  {f.metadata.get('help', '')}{tail}")
    return lines


def explain_sections(section: str | None = None) -> list[str]:
    """`explain` over the training config's sections and the commands' (`serve`, `export`, `bench`,
    `predict`, `eval`, ..., and those families add), or over one of them; an unknown `section` is a
    ConfigError listing the allowed ones."""
    from r1.config_commands import command_sections  # built on this package's parts: imported when used

    commands = command_sections()
    every = {**typing.get_type_hints(Config), **commands}
    if section is not None and section not in every:
        raise ConfigError(f"config explain: unknown section {show(section)}; allowed: {', '.join(every)}")
    lines = []
    for name, cls in every.items():
        if section not in (None, name):
            continue
        if isinstance(cls, type) and issubclass(cls, Variant):
            cls.load_variants()
        if section is None and name == next(iter(commands)):
            lines.append("# the commands' sections (r1 COMMAND ... SECTION.KEY=VALUE, or --config FILE with a SECTION: "
                         "mapping)")
        lines += _explain_section(name, cls)
    return lines


def _explain_section(key: str, cls: type) -> list[str]:
    """`[key]`, the section's fields, then each registered variant's own fields."""
    lines = [f"[{key}]"]
    common = explain(cls, key + ".")
    lines += common
    for vname, vcls in sorted(getattr(cls, "_variants", {}).items()):
        own = [line for line in explain(vcls, key + ".") if line not in common]
        if own:
            lines.append(f"  -- when {key}.name={vname}:")
            lines += own
    return lines
