"""Typer commands built from `Command` specs (`r1/command_spec.py`): the one place that turns a
section's fields into flags, so a flag's default, help text and bounds are the field's own."""
from __future__ import annotations

import importlib
import inspect
import types
import typing
from pathlib import Path
from typing import Any, Optional

import typer

from r1.command_spec import Arg, Command, Flag, Invocation, resolve, split_arguments
from r1.config_commands import field_help, is_override

_P = inspect.Parameter.POSITIONAL_OR_KEYWORD
REGISTERED: dict[str, Command] = {}  # every command added, by how it is typed ("data inspect")


def add_command(app: typer.Typer, cmd: Command) -> None:
    """Register `cmd` on `app`: its arguments, `--config FILE` (where it has a section), one flag per `Flag`."""
    params = [inspect.Parameter("ctx", _P, annotation=typer.Context)]
    params += [_argument(a) for a in arguments(cmd)]
    if cmd.section:
        article = "an" if cmd.section[0] in "aeiou" else "a"
        params.append(inspect.Parameter("config_file", _P, annotation=Optional[Path], default=typer.Option(
            None, "--config", help=f"YAML with {article} {cmd.section}: section (settings: flags > {cmd.section}.KEY=VALUE "
                                   f"> this file > defaults; `r1 config explain {cmd.section}`)")))
    hints = typing.get_type_hints(cmd.settings_class())
    params += [_option(cmd, flag, hints[flag.field]) for flag in cmd.flags]

    def callback(**values: Any) -> None:
        run(cmd, values)

    callback.__signature__ = inspect.Signature(params)
    callback.__annotations__ = {p.name: p.annotation for p in params}
    callback.__doc__ = cmd.help
    app.command(cmd.name)(callback)
    REGISTERED[cmd.typed()] = cmd


def arguments(cmd: Command) -> list[Arg]:
    """The spec's positional arguments, and `overrides` after them unless the last takes many values."""
    if cmd.args and cmd.args[-1].many:
        return list(cmd.args)
    sections = [s for s in (cmd.section, *cmd.passes) if s]
    text = cmd.overrides_help or "Overrides " + ", ".join(f"{s}.KEY=VALUE" for s in sections)
    return [*cmd.args, Arg("overrides", text, path=False, many=True, optional=True)]


def _argument(arg: Arg) -> inspect.Parameter:
    default = None if arg.optional else ...
    extra = {"metavar": arg.metavar} if arg.metavar else {}
    if arg.many:
        parser = _path_or_setting if arg.path else str
        return inspect.Parameter(arg.name, _P, annotation=Optional[list[str]] if arg.optional else list[str],
                                 default=typer.Argument(default, help=arg.help, parser=parser, **extra))
    tp = Path if arg.path else str
    return inspect.Parameter(arg.name, _P, annotation=Optional[tp] if arg.optional else tp,
                             default=typer.Argument(default, help=arg.help, **extra))


def _path_or_setting(value: str) -> Any:
    """A path argument's value as a Path (what the README checker looks for), an override as it is."""
    return value if is_override(value) else Path(value)


def _option(cmd: Command, flag: Flag, tp: Any) -> inspect.Parameter:
    """The flag of field `flag.field` (type `tp`): default None (not given: the section decides)."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    inner = args[0] if typing.get_origin(tp) in (typing.Union, types.UnionType) else tp
    if flag.parse is not None:
        inner = flag.type
    elif flag.path:
        inner = Path
    elif inner not in (bool, int, float, str):
        raise TypeError(f"{cmd.name} {flag.spelling}: a {inner} field needs `parse`")
    meta = cmd.settings_class().__dataclass_fields__[flag.field].metadata
    bounds = {"min": meta["min"], "max": meta["max"]} if flag.bounds else {}
    help_text = flag.help or " ".join(filter(None, [flag.note, field_help(cmd.section, flag.field,
                                                                          cmd.settings_class())]))
    option = typer.Option(None, *flag.decls(inner is bool), help=help_text, envvar=flag.envvar or None,
                          show_default=False, **{k: v for k, v in bounds.items() if v is not None})
    return inspect.Parameter(flag.name, _P, annotation=Optional[inner], default=option)


def run(cmd: Command, values: dict[str, Any]) -> None:
    """Parsed parameters -> an `Invocation` for `cmd.run`."""
    ctx = values.pop("ctx")
    last = arguments(cmd)[-1]
    plain, own, passed = split_arguments(cmd, [str(v) for v in values.get(last.name) or []])
    args = {a.name: values[a.name] for a in cmd.args}
    if cmd.args and cmd.args[-1].many:
        if not plain and not last.optional:
            raise _usage_error(ctx, "MissingParameter", last.name)
        args[last.name] = [Path(v) for v in plain] if last.path else plain
    flags = {f.field: f.to_field(values[f.name]) for f in cmd.flags if values[f.name] is not None}

    def missing(flag: Flag) -> None:
        raise _usage_error(ctx, "MissingParameter", flag.name)

    resolve(cmd.run)(Invocation(cmd, args, own, passed, values.get("config_file"), flags, missing))


def _usage_error(ctx: Any, kind: str, param_name: str) -> Exception:
    """click's own usage error (from the click that typer uses: it may carry its own copy), so it reads
    and exits as click's do: `Error: Missing option '--space'.`, exit 2."""
    core = next(k.__module__ for k in type(ctx).__mro__ if k.__module__.endswith(".core"))
    exceptions = importlib.import_module(core.rsplit(".", 1)[0] + ".exceptions")
    param = next(p for p in ctx.command.params if p.name == param_name)
    return getattr(exceptions, kind)(ctx=ctx, param=param)
