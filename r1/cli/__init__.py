"""The `r1` command. Library code logs; progress bars, tables and exit codes live here.

Every command is declared as a `Command` spec (`r1/command_spec.py`): positional CONFIG or RUN,
`section.key=value` overrides, `--config FILE`, flags generated from its section's fields
(`r1/cli/build.py`). The groups: training.py (train, pipeline, tune), model_commands.py (eval,
predict, export, bench, serve, models), config.py (config show, explain), `r1 data` (r1/data_tools/cli.py)
and the commands families add (`r1.models.family_commands`, e.g. `generate`).

Exit codes: 0 ok, 1 internal error, 2 bad configuration/usage, 3 bad data, 4 training aborted,
5 capability unavailable on this machine (see r1/errors.py).
"""
from __future__ import annotations

import sys

import typer

from r1.cli import model_commands, training
from r1.cli.build import add_command
from r1.cli.config import config_app
from r1.data_tools.cli import COMMANDS as DATA_COMMANDS
from r1.errors import R1Error
from r1.models import family_commands

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="R1: data -> train -> distill -> prune -> quantize -> export -> serve, on one spine.")
data_app = typer.Typer(no_args_is_help=True, help="Look at a dataset before training on it: inspect, clean, convert.")


def _print_version(value: bool) -> None:
    if value:
        from r1.version import __version__
        typer.echo(f"r1 {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                       help="Print the version and exit.")):
    """R1: data -> train -> distill -> prune -> quantize -> export -> serve, on one spine."""


_SPECS = {c.name: c for c in training.COMMANDS + model_commands.COMMANDS}
for _name in ("train", "eval", "predict"):
    add_command(app, _SPECS[_name])
for _spec in family_commands():  # torch-free declarations; the command's module is imported when it runs
    add_command(app, _spec)
app.command()(model_commands.models)
for _name in ("pipeline", "tune", "export", "serve", "bench"):
    add_command(app, _SPECS[_name])
for _spec in DATA_COMMANDS:
    add_command(data_app, _spec)
app.add_typer(config_app, name="config")
app.add_typer(data_app, name="data")


def _usage_error_types() -> tuple[type, ...]:
    """Click's usage-error base class, and the copy of click that recent typer versions vendor."""
    import click

    types = [click.ClickException]
    try:
        from typer._click.exceptions import ClickException as TyperClickException
        types.append(TyperClickException)
    except ImportError:
        pass
    return tuple(types)


def main(argv: list[str] | None = None) -> None:
    """Entry point of `r1`; `argv` (default: sys.argv[1:]) lets tests run it in-process."""
    try:
        app(args=argv, prog_name="r1", standalone_mode=False)
    except R1Error as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(err.exit_code)
    except (typer.Exit, typer.Abort) as err:
        sys.exit(getattr(err, "exit_code", 1))
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as err:  # usage errors (missing argument, bad option value) carry their exit code, 2
        if isinstance(err, _usage_error_types()):
            err.show()
            sys.exit(err.exit_code)
        raise
