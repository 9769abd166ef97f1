"""`r1 config show | explain`: the resolved training config, and every section's fields."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
import yaml

from r1.cli.training import TRAIN_OVERRIDES
from r1.config_commands import command_sections

config_app = typer.Typer(no_args_is_help=True, help="Show or explain configuration.")


@config_app.command("show")
def config_show(config: Path = typer.Argument(..., help="YAML config"),
                overrides: Optional[list[str]] = typer.Argument(None, help=TRAIN_OVERRIDES)):
    """Print the resolved config (file + overrides + flavor presets), as saved in a run dir."""
    from r1.config import load_config, to_dict

    typer.echo(yaml.safe_dump(to_dict(load_config(config, overrides or [])), sort_keys=False).rstrip())


@config_app.command("explain")
def config_explain(section: Optional[str] = typer.Argument(
        None, help="Only this section: the training config's (run, model, data, optim, sched, train, distill, qat, "
                   f"...) or a command's ({', '.join(command_sections())})")):
    """Every config field with its type, default, allowed values and meaning."""
    from r1.config import explain_sections

    typer.echo("\n".join(explain_sections(section)))
