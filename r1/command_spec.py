"""How an `r1` command is declared: its positional arguments, its typed section, the flags that set the
section's fields, and the function that runs it. Torch-free and typer-free, so a family declares the
commands it adds in its `config.py` (`COMMANDS`, e.g. the lm family's `generate`); `r1/cli/build.py`
turns every spec into a typer command. Every command reads the same way:

    r1 COMMAND CONFIG|RUN [ARGS...] [section.KEY=VALUE ...] [--config FILE] [--flag VALUE ...]

Settings come from, highest first: flags, `section.KEY=VALUE` overrides, the `--config` file (a YAML
with a `section:` mapping), the field's default (`opt(...)`, declared once). An argument is an override
when it looks like `key.path=value` (or `field=value` for a field of the command's section, refused
with a message naming the right form); overrides of the sections a command `passes` on (the training
config for `train`, `tune`, `pipeline`; `data.*`, `model.*` for `eval`) go to its code as they are.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from r1.config.parse import from_dict
from r1.config_commands import command_sections, is_override, load_section
from r1.errors import ConfigError

ALL = "*"  # `passes=(ALL,)`: every section but the command's own goes on (the training config's)


@dataclass(frozen=True)
class Arg:
    """A positional argument. The last one may take `many` values; the command's overrides are read
    from among them (a command without such an argument gets `overrides`, after its arguments)."""
    name: str
    help: str
    path: bool = True  # a file or folder
    many: bool = False
    optional: bool = False
    metavar: str = ""


@dataclass(frozen=True)
class Flag:
    """A flag that sets field `field` of the command's section; default, help and bounds come from the field."""
    field: str
    decl: str = ""  # click spelling, e.g. "--nms/--no-nms"; default --field-name (booleans: --x/--no-x)
    param: str = ""  # parameter name (default: the field's)
    path: bool = False  # the value names a file or folder (a str field)
    bounds: bool = False  # click checks the field's min/max while parsing (a usage error, exit 2)
    parse: Any = None  # (value, flag spelling) -> field value, or "module:function": a flag in other units
    type: Any = str  # with `parse`: the flag's own value type
    help: str = ""  # replaces the field's help where the flag's unit differs; must name section.field
    note: str = ""  # put before the field's help
    envvar: str = ""
    required: bool = False  # a usage error when neither the flag, an override nor the file sets it

    @property
    def name(self) -> str:
        return self.param or self.field

    def decls(self, is_bool: bool) -> list[str]:
        if self.decl:
            return [self.decl]
        long = "--" + self.field.replace("_", "-")
        return [f"{long}/--no-{long[2:]}"] if is_bool else [long]

    @property
    def spelling(self) -> str:
        """The flag as a user types it (`--max-body-mb`), for messages."""
        return (self.decl or "--" + self.field.replace("_", "-")).split("/")[0]

    def to_field(self, value: Any) -> Any:
        if self.parse is not None:
            return resolve(self.parse)(value, self.spelling)
        return str(value) if isinstance(value, Path) else value


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    run: Any  # run(Invocation), or "module:function" imported when the command runs
    section: str = ""  # its own section: --config FILE, section.KEY=VALUE ("": flags only, see `settings`)
    settings: type | None = None  # the dataclass of its flags (default: the section's, `command_sections`)
    args: tuple[Arg, ...] = ()
    flags: tuple[Flag, ...] = ()
    passes: tuple[str, ...] = ()  # other sections whose overrides go to `run` as they are (ALL: every one)
    path: str = ""  # as typed, e.g. "data inspect", for messages (default: the name)
    overrides_help: str = ""  # help of the overrides argument (default: from the sections)
    from_args: Any = None  # positional values -> {field: value} they set (as flags do), or "module:function"
    arg_names: Any = None  # {field: how it is typed} for those fields' messages, e.g. {"model": "MODEL"}

    def settings_class(self) -> type:
        return self.settings or command_sections()[self.section]

    def typed(self) -> str:
        return self.path or self.name

    def flag_names(self) -> dict[str, str]:
        return {f.field: f.spelling for f in self.flags}


@dataclass
class Invocation:
    """One run of a command, as parsed: what `Command.run` receives."""
    command: Command
    args: dict[str, Any]  # positional values by name (a `many` argument: its plain values)
    overrides: list[str] = field(default_factory=list)  # the command's own section.KEY=VALUE
    passed: list[str] = field(default_factory=list)  # the other sections' (see Command.passes)
    config: Path | None = None
    flags: dict[str, Any] = field(default_factory=dict)  # field -> value, for the flags given
    missing: Callable[[Flag], Any] | None = None  # raises the usage error for a required flag left unset

    def settings(self) -> Any:
        """The command's section: flags (and the fields its positional arguments set, `from_args`) >
        overrides > --config file > defaults."""
        cmd = self.command
        extra = resolve(cmd.from_args)(self.args) if cmd.from_args else {}
        given = {**self.flags, **{k: v for k, v in extra.items() if v is not None}}
        if not cmd.section:
            cfg = from_dict(cmd.settings_class(), given, cmd.name)
        else:
            names = {**cmd.flag_names(), **(cmd.arg_names or {})}
            cfg = load_section(cmd.section, self.config, self.overrides, given, names)
        for flag in cmd.flags:
            if flag.required and getattr(cfg, flag.field) in ("", None):
                if self.missing is not None:
                    self.missing(flag)
                raise ConfigError(f"{flag.spelling}: required ({cmd.section}.{flag.field})")
        return cfg


def split_arguments(cmd: Command, values: list[str]) -> tuple[list[str], list[str], list[str]]:
    """The values of the command's last positional argument -> (plain values, own overrides, passed on).

    Where the command takes no further plain values, every value is a setting (so `r1 train CONFIG x`
    is an override error, as before); else `a.b=value`, or `field=value` for a field of its section."""
    takes_plain = any(a.many for a in cmd.args)
    fields = cmd.settings_class().__dataclass_fields__
    plain, own, passed = [], [], []
    for value in values:
        key = value.partition("=")[0]
        if takes_plain and not (is_override(value) and ("." in key or key in fields)):
            plain.append(value)
        elif cmd.section and key.startswith(cmd.section + "."):
            own.append(value)
        elif ALL in cmd.passes or ("." in key and key.split(".")[0] in cmd.passes):
            passed.append(value)
        else:
            raise ConfigError(wrong_section(cmd, value))
    return plain, own, passed


def wrong_section(cmd: Command, value: str) -> str:
    """`override 'bench.runs=3': `r1 serve` takes serve.KEY=VALUE, e.g. serve.model=...`"""
    allowed = [f"{s}.KEY=VALUE" for s in (cmd.section, *cmd.passes)]
    first = next(iter(cmd.settings_class().__dataclass_fields__))
    text = allowed[0] if len(allowed) == 1 else ", ".join(allowed[:-1]) + " or " + allowed[-1]
    return f"override {value!r}: `r1 {cmd.typed()}` takes {text}, e.g. {cmd.section}.{first}=..."


def resolve(target: Any) -> Any:
    """A callable, or the attribute a "module:attribute" string names (imported now)."""
    if not isinstance(target, str):
        return target
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)
