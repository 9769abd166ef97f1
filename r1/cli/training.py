"""`r1 train`, `r1 pipeline`, `r1 tune`: the commands that take a training config (or a recipe) and pass
its `section.key=value` overrides on to it."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from r1.cli.console import console_logging
from r1.command_sections import TrainFlags
from r1.command_spec import ALL, Arg, Command, Flag, Invocation

TRAIN_OVERRIDES = "Dotted overrides key=value, e.g. optim.lr=3e-3 train.epochs=2"


def train(inv: Invocation) -> None:
    from r1.config import load_config

    flags = inv.settings()
    cfg = load_config(inv.args["config"], inv.passed)  # bad keys fail here, before torch is imported
    from r1.train import fit

    console_logging()
    bar = None
    if flags.progress and sys.stderr.isatty():
        from tqdm import tqdm
        bar = tqdm(total=0, unit="step", dynamic_ncols=True, file=sys.stderr)

    def on_step(step: int, total: int, out: dict) -> None:
        if bar is not None:
            bar.total = total
            bar.n = step
            bar.set_postfix(loss=f"{out['loss']:.4f}", refresh=False)
            bar.refresh()

    try:
        metrics = fit(cfg, resume=flags.resume, on_step=on_step)
    finally:
        if bar is not None:
            bar.close()
    from r1.evaluate.tables import groups_note, summary_table

    run_dir = cfg.run.resolved_dir()
    typer.echo(summary_table(metrics))
    more = groups_note(metrics)
    typer.echo(f"\n{more + ' and e' if more else 'E'}very metric: {run_dir}/metrics.md (metrics.json for programs)")
    typer.echo(f"run directory: {run_dir}")


def pipeline(inv: Invocation) -> None:
    from r1.pipeline import load_recipe, run_pipeline

    cfg = inv.settings()
    console_logging()
    plan = load_recipe(inv.args["recipe"], inv.passed, dir=Path(cfg.dir) if cfg.dir else None)
    outputs = run_pipeline(plan)
    typer.echo(json.dumps(outputs, indent=2))
    report = plan.dir / "report.md"
    if report.is_file():
        typer.echo(report.read_text())
    typer.echo(f"pipeline directory: {plan.dir}")


def tune(inv: Invocation) -> None:
    from r1.config import load_config
    from r1.tune.study import TuneOptions, run_study

    cfg, config = inv.settings(), inv.args["config"]
    study_dir = cfg.dir or f"runs/{load_config(config, inv.passed).run.name}-tune"
    console_logging()
    summary = run_study(TuneOptions(str(config), cfg.space, cfg.trials, str(study_dir), cfg.storage, cfg.jobs,
                                    cfg.pruner, cfg.seed, cfg.startup, list(inv.passed)))
    typer.echo(json.dumps(summary, indent=2))


COMMANDS = [
    Command("train", "Train a model; writes runs/<name>/ (config, checkpoints, weights, metrics, logs).", train,
            settings=TrainFlags, passes=(ALL,), overrides_help=TRAIN_OVERRIDES,
            args=(Arg("config", "YAML config (see configs/)"),),
            flags=(Flag("resume", "--resume"), Flag("progress"))),
    Command("pipeline", "Run a recipe's stages (train, prune, quantize, export, bench); finished stages whose "
            "settings and inputs are unchanged are skipped, changed ones re-run.", pipeline, "pipeline",
            passes=(ALL,), overrides_help=TRAIN_OVERRIDES + " (every train stage), or pipeline.dir=DIR",
            args=(Arg("recipe", "Recipe YAML (see recipes/)"),), flags=(Flag("dir", path=True),)),
    Command("tune", "Bayesian hyper-parameter search (Optuna TPE + pruning); a killed study continues on re-run.",
            tune, "tune", passes=(ALL,), overrides_help=TRAIN_OVERRIDES + " (every trial), or tune.KEY=VALUE",
            args=(Arg("config", "Training YAML whose hyper-parameters are searched"),),
            flags=(Flag("space", path=True, required=True), Flag("trials"), Flag("dir", path=True), Flag("storage"),
                   Flag("jobs"), Flag("pruner"), Flag("startup"), Flag("seed"))),
]
