"""The `r1` command. Library code logs; progress bars, tables and exit codes live here.

Exit codes: 0 ok, 1 internal error, 2 bad configuration/usage, 3 bad data, 4 training aborted,
5 capability unavailable on this machine (see r1/errors.py).
"""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Optional

import typer
import yaml

from r1.data_tools.cli import data_app
from r1.errors import ConfigError, R1Error

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="R1: data -> train -> distill -> prune -> quantize -> export -> serve, on one spine.")
config_app = typer.Typer(no_args_is_help=True, help="Show or explain configuration.")
app.add_typer(config_app, name="config")
app.add_typer(data_app, name="data")


def _print_version(value: bool) -> None:
    if value:
        from r1.version import __version__
        typer.echo(f"r1 {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                       help="Print the version and exit.")):
    """R1: data -> train -> distill -> prune -> quantize -> export -> serve, on one spine."""

OVERRIDES = typer.Argument(None, help="Dotted overrides key=value, e.g. optim.lr=3e-3 train.epochs=2")


def _help(section: str, name: str) -> str:
    from r1.config_commands import field_help
    return field_help(section, name)


class _TqdmHandler(logging.Handler):
    """Console log lines that do not break the progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm
        tqdm.write(self.format(record), file=sys.stderr)


def _r1_or_warning(record: logging.LogRecord) -> bool:
    return record.name.split(".")[0] == "r1" or record.levelno >= logging.WARNING


def _console_logging(verbose: bool = False) -> None:
    # On the root logger (r1's lines and other libraries' warnings): a library's logging.basicConfig()
    # or root-level logging.info() then finds a handler and adds none that would print r1's lines twice.
    top = logging.getLogger()
    if not any(isinstance(h, _TqdmHandler) for h in top.handlers):
        h = _TqdmHandler()
        h.setFormatter(logging.Formatter("%(message)s"))
        h.addFilter(_r1_or_warning)
        top.addHandler(h)
    root = logging.getLogger("r1")
    root.setLevel(logging.DEBUG if verbose else logging.INFO)


@app.command()
def train(config: Path = typer.Argument(..., help="YAML config (see configs/)"),
          overrides: Optional[list[str]] = OVERRIDES,
          resume: bool = typer.Option(False, "--resume", help="Continue the run in run.dir from checkpoints/last.pt"),
          progress: bool = typer.Option(True, help="Show a progress bar")):
    """Train a model; writes runs/<name>/ (config, checkpoints, weights, metrics, logs)."""
    from r1.config import load_config

    cfg = load_config(config, overrides or [])  # bad keys fail here, before torch is imported
    from r1.train import fit

    _console_logging()
    bar = None
    if progress and sys.stderr.isatty():
        from tqdm import tqdm
        bar = tqdm(total=0, unit="step", dynamic_ncols=True, file=sys.stderr)

    def on_step(step: int, total: int, out: dict) -> None:
        if bar is not None:
            bar.total = total
            bar.n = step
            bar.set_postfix(loss=f"{out['loss']:.4f}", refresh=False)
            bar.refresh()

    try:
        metrics = fit(cfg, resume=resume, on_step=on_step)
    finally:
        if bar is not None:
            bar.close()
    typer.echo(json.dumps(metrics, indent=2))
    typer.echo(f"run directory: {cfg.run.resolved_dir()}")


@app.command("eval")
def eval_cmd(model: Path = typer.Argument(..., help="Run dir or model.safetensors"),
             overrides: Optional[list[str]] = typer.Argument(
                 None, help="data.* / model.* overrides, e.g. data.root=DIR model.active_width=0.5"),
             split: str = typer.Option("test", help="val or test"),
             json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the metrics here"),
             attack: Optional[str] = typer.Option(None, help="Classifiers, torch runtime: also report accuracy "
                                                  "under an fgsm or pgd attack (L-inf, pixel units)"),
             eps: float = typer.Option(0.1, help="With --attack: L-inf budget in [0, 1] pixel units (0.1 = 25/255)"),
             steps: int = typer.Option(10, help="With --attack pgd: steps (step size 2.5 * eps / steps)"),
             runtime: Optional[str] = typer.Option(None, help="torch, onnx, onnx-int8 (families that have it) "
                                                   "or tensorrt; default: from the file")):
    """Evaluate a trained model on a split of its data (or of data given by overrides)."""
    from r1.evaluate.artifact import evaluate_artifact

    _console_logging()
    if split not in ("val", "test"):
        raise ConfigError(f"--split: {split!r} is not allowed; allowed: val, test")
    if attack is not None:
        if runtime not in (None, "torch"):
            raise ConfigError(f"--attack: runs with the torch runtime only, not --runtime {runtime}")
        from r1.robust.evaluate import evaluate_attack
        metrics = evaluate_attack(model, split, overrides or [], attack, eps, steps)
    else:
        metrics = evaluate_artifact(model, split, overrides or [], runtime=runtime)
    text = json.dumps(metrics, indent=2)
    typer.echo(text)
    if json_out:
        json_out.write_text(text)


@app.command()
def predict(model: Path = typer.Argument(..., help="Run dir, model.safetensors, .onnx or TensorRT engine"),
            images: list[Path] = typer.Argument(..., help="Image files"),
            out: Optional[Path] = typer.Option(None, help="Directory for annotated PNGs (detection)"),
            top_k: int = typer.Option(3, min=1, help="Classes shown per image (classification)"),
            draw_threshold: float = typer.Option(0.3, min=0.0, max=1.0,
                                                 help="Detection, with --out: draw boxes scoring at least this"),
            coco_json: Optional[Path] = typer.Option(None, "--coco-json",
                                                     help="Detection: also write COCO results (image ids 1..N)"),
            question: Optional[str] = typer.Option(None, help="Image+text models: the question asked about "
                                                   "each image")):
    """Predict on image files; prints one JSON object per image."""
    from r1.predict import predict_files

    _console_logging()
    records = []
    for record in predict_files(model, images, out_dir=out, top_k=top_k,
                                draw_options={"score_thresh": draw_threshold},
                                input_options={"question": question}):
        try:
            line = json.dumps(record, allow_nan=False)
        except ValueError:  # NaN is not JSON: broken weights or a preprocess std of 0
            from r1.errors import NonFiniteOutput
            raise NonFiniteOutput(f"{record.get('file', model)}: the model's output is not finite (NaN/inf); "
                                  f"its weights or preprocessing (std 0?) are broken") from None
        typer.echo(line)
        records.append(record)
    if coco_json is not None:
        from r1.predict import write_results
        write_results(model, records, "coco", coco_json)
        typer.echo(f"COCO results: {coco_json}", err=True)


@app.command()
def generate(model: Path = typer.Argument(..., help="Language-model run dir or model.safetensors"),
             prompt: str = typer.Option("", help="Text to continue"),
             max_new_tokens: int = typer.Option(200, min=1, help="Tokens to generate"),
             temperature: float = typer.Option(0.8, min=0.0, help="0: greedy"),
             top_k: int = typer.Option(0, min=0, help="Keep the k most likely tokens (0: all)"),
             top_p: float = typer.Option(1.0, min=0.0, max=1.0, help="Nucleus sampling mass, in (0, 1]"),
             exit_threshold: Optional[float] = typer.Option(None, help="Early-exit threshold (R1-LM); "
                                                            "default: the model's"),
             no_cache: bool = typer.Option(False, "--no-cache", help="Recompute the context every step (slower)"),
             chat: Optional[bool] = typer.Option(None, "--chat/--no-chat", help="Wrap the prompt in the chat template"),
             seed: int = typer.Option(0, help="Sampling seed"),
             runtime: str = typer.Option("torch", help="torch, onnx or onnx-int8 (onnxruntime, the run's cached "
                                         "export; every layer runs, no early exit)")):
    """Generate text, streamed as it is produced, with a KV cache."""
    import torch

    from r1.models.lm.generate import check_sampling, default_exit_threshold, load_lm, prompt_text, stream_text

    check_sampling(temperature, top_k, top_p, {"temperature": "--temperature", "top_k": "--top-k", "top_p": "--top-p"})
    if runtime != "torch":
        from r1.models.lm.onnx_predictor import stream_pieces
        for piece in stream_pieces(model, runtime, prompt, max_new_tokens, temperature, top_k, top_p, seed, chat):
            typer.echo(piece, nl=False)
        return typer.echo()
    m, tok = load_lm(model)
    threshold = exit_threshold if exit_threshold is not None else default_exit_threshold(m)
    pieces = stream_text(m, tok, prompt_text(m.r1_meta, prompt, chat), max_new_tokens, temperature=temperature,
                         top_k=top_k, top_p=top_p, use_cache=not no_cache, exit_threshold=threshold,
                         generator=torch.Generator().manual_seed(seed))
    for piece in pieces:
        typer.echo(piece, nl=False)
    typer.echo()


@app.command()
def models(pattern: str = typer.Argument("*", help="Glob over model names"),
           flops: bool = typer.Option(False, help="Also count GFLOPs (detection) at each model's input size")):
    """List registered models and their flavors with parameter counts."""
    from r1.model_table import model_rows

    rows = model_rows(pattern, flops)
    header = ["model", "family", "flavor", "params"] + (["GFLOPs"] if flops else [])
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    for r in [header] + rows:
        typer.echo("  ".join(str(v).ljust(w) for v, w in zip(r, widths)))
    typer.echo("(counted with 10 output classes / a vocabulary of 10; the data sets the real number)")


@app.command()
def pipeline(recipe: Path = typer.Argument(..., help="Recipe YAML (see recipes/)"),
             overrides: Optional[list[str]] = OVERRIDES,
             dir: Optional[Path] = typer.Option(None, "--dir", help="Pipeline directory: each stage writes DIR/<stage> "
                                                "(default: the recipe's dir)")):
    """Run a recipe's stages (train, prune, quantize, export, bench); finished stages whose settings and
    inputs are unchanged are skipped, changed ones re-run."""
    from r1.pipeline import load_recipe, run_pipeline

    _console_logging()
    plan = load_recipe(recipe, overrides or [], dir=dir)
    outputs = run_pipeline(plan)
    typer.echo(json.dumps(outputs, indent=2))
    report = plan.dir / "report.md"
    if report.is_file():
        typer.echo(report.read_text())
    typer.echo(f"pipeline directory: {plan.dir}")


@config_app.command("show")
def config_show(config: Path = typer.Argument(..., help="YAML config"), overrides: Optional[list[str]] = OVERRIDES):
    """Print the resolved config (file + overrides + flavor presets), as saved in a run dir."""
    from r1.config import load_config, to_dict

    typer.echo(yaml.safe_dump(to_dict(load_config(config, overrides or [])), sort_keys=False).rstrip())


@config_app.command("explain")
def config_explain(section: Optional[str] = typer.Argument(
        None, help="Only this section: run, model, data, optim, sched, train, distill, qat, serve, export, bench")):
    """Every config field with its type, default, allowed values and meaning."""
    from r1.config import explain_sections

    typer.echo("\n".join(explain_sections(section)))


CONFIG_FILE = typer.Option(None, "--config", help="YAML with a serve:/export:/bench: section (see configs/serve.yaml)")


def _split_args(args: list[str], command: str, usage: str, most: int) -> tuple[list[str], list[str]]:
    """Positional arguments -> (plain arguments, `section.key=value` overrides)."""
    from r1.config_commands import is_override

    plain = [a for a in args if not is_override(a)]
    if len(plain) > most:
        raise ConfigError(f"r1 {command}: unexpected argument {plain[most]!r}; usage: {usage}")
    return plain, [a for a in args if is_override(a)]


@app.command()
def tune(config: Path = typer.Argument(..., help="Training YAML whose hyper-parameters are searched"),
         overrides: Optional[list[str]] = OVERRIDES,
         space: Path = typer.Option(..., help="Search space YAML: dotted key -> {type: float|int|categorical, ...}"),
         trials: int = typer.Option(20, help="Finished (complete + pruned) trials the study should hold"),
         dir: Optional[Path] = typer.Option(None, "--dir", help="Study dir (default runs/<run.name>-tune)"),
         storage: str = typer.Option("", help="Optuna storage URL (default sqlite:///<dir>/tune.db)"),
         jobs: int = typer.Option(1, help="Trials in parallel processes; each gets cores // jobs threads"),
         pruner: str = typer.Option("median", help="median, hyperband or none"),
         startup: int = typer.Option(5, help="Random trials before TPE, and before the median pruner prunes"),
         seed: int = typer.Option(0, help="Sampler seed")):
    """Bayesian hyper-parameter search (Optuna TPE + pruning); a killed study continues on re-run."""
    from r1.config import load_config
    from r1.tune.study import TuneOptions, run_study

    study_dir = dir or Path(f"runs/{load_config(config, overrides or []).run.name}-tune")
    _console_logging()
    summary = run_study(TuneOptions(str(config), str(space), trials, str(study_dir), storage, jobs, pruner, seed,
                                    startup, list(overrides or [])))
    typer.echo(json.dumps(summary, indent=2))


@app.command("export")
def export_cmd(model: Path = typer.Argument(..., help="Run dir, model.safetensors, or (for tensorrt, triton) an .onnx"),
               overrides: Optional[list[str]] = typer.Argument(None, help="export.KEY=VALUE, e.g. export.opset=17"),
               config: Optional[Path] = CONFIG_FILE,
               format: Optional[str] = typer.Option(None, "--format", help=_help("export", "format")),
               dynamic_batch: Optional[bool] = typer.Option(None, "--dynamic-batch/--no-dynamic-batch",
                                                            help=_help("export", "dynamic_batch")),
               opset: Optional[int] = typer.Option(None, help=_help("export", "opset")),
               out: Optional[Path] = typer.Option(None, help=_help("export", "out")),
               nms: Optional[bool] = typer.Option(None, "--nms/--no-nms", help=_help("export", "nms")),
               fp16: Optional[bool] = typer.Option(None, "--fp16/--no-fp16", help=_help("export", "fp16")),
               int8: Optional[bool] = typer.Option(None, "--int8/--no-int8", help=_help("export", "int8")),
               max_batch: Optional[int] = typer.Option(None, help=_help("export", "max_batch")),
               dynamic_hw: Optional[bool] = typer.Option(None, "--dynamic-hw/--no-dynamic-hw",
                                                         help=_help("export", "dynamic_hw")),
               min_size: Optional[int] = typer.Option(None, help=_help("export", "min_size")),
               opt_size: Optional[int] = typer.Option(None, help=_help("export", "opt_size")),
               max_size: Optional[int] = typer.Option(None, help=_help("export", "max_size"))):
    """Export to ONNX (verified against torch with onnxruntime on another batch size), TensorRT, a Triton repository
    or an ExecuTorch program (XNNPACK, batch 1; verified in the ExecuTorch runtime).

    Settings: flags > export.KEY=VALUE > --config FILE > defaults (`r1 config explain export`)."""
    from r1.config_commands import load_section

    cfg = load_section("export", config, overrides or [], dict(
        format=format, dynamic_batch=dynamic_batch, opset=opset, out=None if out is None else str(out), nms=nms,
        fp16=fp16, int8=int8, max_batch=max_batch, dynamic_hw=dynamic_hw, min_size=min_size, opt_size=opt_size,
        max_size=max_size))
    from r1.export.cli import run_export

    _console_logging()
    typer.echo(json.dumps(run_export(model, cfg.format, cfg.dynamic_batch, cfg.opset,
                                     Path(cfg.out) if cfg.out else None, cfg.nms, cfg.fp16, cfg.int8,
                                     cfg.max_batch, triton=cfg.triton_settings(), hw=cfg.hw_range()), indent=2))


@app.command("serve")
def serve_cmd(args: Optional[list[str]] = typer.Argument(
                  None, metavar="[MODEL] [serve.KEY=VALUE]...",
                  help="Run dir, model.safetensors or .onnx (or serve.model in --config), then overrides "
                       "such as serve.max_batch=16"),
              config: Optional[Path] = CONFIG_FILE,
              host: Optional[str] = typer.Option(None, help=_help("serve", "host")),
              port: Optional[int] = typer.Option(None, help=_help("serve", "port")),
              runtime: Optional[str] = typer.Option(None, help=_help("serve", "runtime")),
              max_batch: Optional[int] = typer.Option(None, help=_help("serve", "max_batch")),
              max_wait_ms: Optional[float] = typer.Option(None, help=_help("serve", "max_wait_ms")),
              max_queue: Optional[int] = typer.Option(None, help=_help("serve", "max_queue")),
              timeout_ms: Optional[float] = typer.Option(None, help=_help("serve", "timeout_ms")),
              threads: Optional[int] = typer.Option(None, help=_help("serve", "threads")),
              inference: Optional[str] = typer.Option(None, help=_help("serve", "inference")),
              max_body_mb: Optional[float] = typer.Option(None, help="Request body limit, MiB: 413 "
                                                          "(default 8; serve.max_body_bytes)"),
              max_pixels: Optional[int] = typer.Option(None, help=_help("serve", "max_pixels")),
              max_new_tokens: Optional[int] = typer.Option(None, help=_help("serve", "max_new_tokens")),
              max_text_chars: Optional[int] = typer.Option(None, help=_help("serve", "max_text_chars")),
              access_log: Optional[bool] = typer.Option(None, "--access-log/--no-access-log",
                                                        help=_help("serve", "access_log")),
              traffic: Optional[str] = typer.Option(None, help="Variant weights, e.g. stable=95,canary=5 "
                                                    "(serve.traffic)"),
              stable_variant: Optional[str] = typer.Option(None, help=_help("serve", "stable_variant")),
              admin_token: Optional[str] = typer.Option(None, envvar="R1_ADMIN_TOKEN",
                                                        help=_help("serve", "admin_token"))):
    """HTTP inference server: POST /v1/predict (/v1/completions for language models), GET /healthz /readyz
    /metrics /docs /v1/variants. A/B and canary: `r1 serve stable=RUN_A canary=RUN_B --traffic stable=95,canary=5`.

    Settings: flags > serve.KEY=VALUE > --config FILE > defaults (`r1 config explain serve`)."""
    from r1.config_commands import load_section
    from r1.serve.variants import parse_traffic, split_named, split_variants

    named, rest = split_named(args or [])  # NAME=MODEL variants (a NAME without a dot, not a serve key)
    plain, overrides = _split_args(rest, "serve", "r1 serve [MODEL | NAME=MODEL ...] [serve.KEY=VALUE ...] "
                                   "[--flags]", 64)
    model, variants = split_variants(plain + named)
    body = None if max_body_mb is None else int(max_body_mb * (1 << 20))
    cfg = load_section("serve", config, overrides, dict(
        model=model, variants=variants, host=host, port=port, runtime=runtime, max_batch=max_batch,
        max_wait_ms=max_wait_ms, max_queue=max_queue, timeout_ms=timeout_ms, threads=threads, inference=inference,
        max_body_bytes=body, max_pixels=max_pixels, max_new_tokens=max_new_tokens, max_text_chars=max_text_chars,
        access_log=access_log, traffic=None if traffic is None else parse_traffic(traffic), stable_variant=stable_variant,
        admin_token=admin_token), flag_names={"max_body_bytes": "--max-body-mb", "model": "MODEL",
                                              "variants": "NAME=MODEL"})
    if cfg.variants and cfg.model:
        raise ConfigError("serve: give one MODEL or NAME=MODEL variants (serve.variants), not both")
    if not cfg.model and not cfg.variants:
        raise ConfigError("serve.model: no model given; pass MODEL (a run dir, .safetensors or .onnx) "
                          "or set serve.model in --config")
    from r1.serve.server import check_model, serve

    _console_logging()
    check_model(cfg)
    serve(cfg)


@app.command("bench")
def bench_cmd(target: str = typer.Argument(..., help="A model (run dir, .safetensors, .onnx), or `serve`"),
              args: Optional[list[str]] = typer.Argument(
                  None, metavar="[URL] [bench.KEY=VALUE]...",
                  help="With `serve`: the server URL; then overrides such as bench.runs=50"),
              config: Optional[Path] = CONFIG_FILE,
              runtime: Optional[str] = typer.Option(None, help=_help("bench", "runtime")),
              batch_sizes: Optional[str] = typer.Option(None, help="Comma-separated. " + _help("bench", "batch_sizes")),
              runs: Optional[int] = typer.Option(None, help=_help("bench", "runs")),
              threads: Optional[int] = typer.Option(None, help=_help("bench", "threads")),
              concurrency: Optional[str] = typer.Option(None, help="Comma-separated. " + _help("bench", "concurrency")),
              duration: Optional[float] = typer.Option(None, help=_help("bench", "duration")),
              max_requests: Optional[int] = typer.Option(None, help=_help("bench", "max_requests")),
              client: Optional[str] = typer.Option(None, help=_help("bench", "client")),
              json_out: Optional[Path] = typer.Option(None, "--json", help=_help("bench", "json"))):
    """`r1 bench MODEL`: in-process latency/throughput per runtime and batch size.
    `r1 bench serve URL`: HTTP load test (throughput, p50/p95/p99).

    Settings: flags > bench.KEY=VALUE > --config FILE > defaults (`r1 config explain bench`)."""
    from r1.bench.cli import parse_ints
    from r1.config_commands import load_section

    plain, overrides = _split_args(args or [], "bench", "r1 bench MODEL|serve [URL] [bench.KEY=VALUE ...]", 1)
    cfg = load_section("bench", config, overrides, dict(
        runtime=runtime, runs=runs, threads=threads, duration=duration, max_requests=max_requests, client=client,
        batch_sizes=None if batch_sizes is None else parse_ints(batch_sizes, "--batch-sizes"),
        concurrency=None if concurrency is None else parse_ints(concurrency, "--concurrency"),
        json=None if json_out is None else str(json_out)), flag_names={"json": "--json"})
    from r1.bench.cli import run_bench

    _console_logging()
    table, rows = run_bench(target, plain[0] if plain else None, cfg.runtime or None,
                            ",".join(map(str, cfg.batch_sizes)), cfg.runs, cfg.threads,
                            ",".join(map(str, cfg.concurrency)), cfg.duration, cfg.max_requests, cfg.client)
    typer.echo(table)
    if cfg.json:
        Path(cfg.json).write_text(json.dumps(rows, indent=2))


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


if __name__ == "__main__":
    main()
