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

from r1.errors import ConfigError, R1Error

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="R1: data -> train -> distill -> prune -> quantize -> export -> serve, on one spine.")
config_app = typer.Typer(no_args_is_help=True, help="Show or explain configuration.")
app.add_typer(config_app, name="config")

OVERRIDES = typer.Argument(None, help="Dotted overrides key=value, e.g. optim.lr=3e-3 train.epochs=2")


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
    from r1.train import fit

    _console_logging()
    cfg = load_config(config, overrides or [])
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
             json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the metrics here")):
    """Evaluate a trained model on a split of its data (or of data given by overrides)."""
    from r1.evaluate.artifact import evaluate_artifact

    _console_logging()
    if split not in ("val", "test"):
        raise ConfigError(f"--split: {split!r} is not allowed; allowed: val, test")
    metrics = evaluate_artifact(model, split, overrides or [])
    text = json.dumps(metrics, indent=2)
    typer.echo(text)
    if json_out:
        json_out.write_text(text)


@app.command()
def predict(model: Path = typer.Argument(..., help="Run dir, model.safetensors, .onnx or TensorRT engine"),
            images: list[Path] = typer.Argument(..., help="Image files"),
            out: Optional[Path] = typer.Option(None, help="Directory for annotated PNGs (detection)"),
            top_k: int = typer.Option(3, help="Classes shown per image (classification)"),
            coco_json: Optional[Path] = typer.Option(None, "--coco-json",
                                                     help="Detection: also write COCO results (image ids 1..N)")):
    """Predict on image files; prints one JSON object per image."""
    from r1.predict import predict_files

    _console_logging()
    records = []
    for record in predict_files(model, images, out_dir=out, top_k=top_k):
        typer.echo(json.dumps(record))
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
             top_p: float = typer.Option(1.0, min=0.0, max=1.0, help="Nucleus sampling mass"),
             exit_threshold: Optional[float] = typer.Option(None, help="Early-exit threshold (R1-LM); default: the model's"),
             no_cache: bool = typer.Option(False, "--no-cache", help="Recompute the context every step (slower)"),
             chat: Optional[bool] = typer.Option(None, "--chat/--no-chat", help="Wrap the prompt in the chat template"),
             seed: int = typer.Option(0, help="Sampling seed")):
    """Generate text, streamed as it is produced, with a KV cache."""
    import torch

    from r1.lm.generate import default_exit_threshold, load_lm, prompt_text, stream_text

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
def config_explain():
    """Every config field with its type, default, allowed values and meaning."""
    from r1.config import Config, DataConfig, ModelConfig, explain

    ModelConfig.load_variants()
    DataConfig.load_variants()
    typer.echo("\n".join(explain(Config)))


@app.command("export")
def export_cmd(model: Path = typer.Argument(..., help="Run dir, model.safetensors, or (for tensorrt) an .onnx"),
               format: str = typer.Option("onnx", "--format", help="onnx or tensorrt"),
               dynamic_batch: bool = typer.Option(True, "--dynamic-batch/--no-dynamic-batch",
                                                  help="Dynamic batch dimension"),
               opset: Optional[int] = typer.Option(None, help="ONNX opset (default: the exporter's)"),
               out: Optional[Path] = typer.Option(None, help="Output file (default: beside the model)"),
               nms: bool = typer.Option(False, "--nms", help="Detection: NMS inside the graph; outputs boxes, scores, "
                                        "labels, num_dets (fixed size, padded; see the r1.det metadata)"),
               fp16: bool = typer.Option(False, help="TensorRT: FP16 kernels"),
               int8: bool = typer.Option(False, help="TensorRT: INT8 (calibrated on the model's val data)"),
               max_batch: int = typer.Option(32, help="TensorRT: profile max batch (min 1, opt max/4)")):
    """Export to ONNX (verified against torch with onnxruntime on another batch size) or TensorRT."""
    from r1.export.cli import run_export

    _console_logging()
    typer.echo(json.dumps(run_export(model, format, dynamic_batch, opset, out, nms, fp16, int8, max_batch), indent=2))


@app.command("serve")
def serve_cmd(model: Path = typer.Argument(..., help="Run dir, model.safetensors or .onnx"),
              host: str = typer.Option("127.0.0.1", help="Bind address"),
              port: int = typer.Option(8000, help="Port"),
              runtime: str = typer.Option("torch", help="torch, onnx or tensorrt"),
              max_batch: int = typer.Option(32, help="Run a batch at this many queued requests"),
              max_wait_ms: float = typer.Option(5.0, help="... or this long after the oldest arrived"),
              max_queue: int = typer.Option(256, help="Queued requests beyond this get 503 + Retry-After"),
              timeout_ms: float = typer.Option(30000.0, help="Per-request limit (queue + inference): 504"),
              threads: int = typer.Option(1, help="Inference threads"),
              inference: str = typer.Option("process", help="process: the model in a worker process (the "
                                            "event loop keeps its own GIL); thread: in the server process"),
              max_body_mb: float = typer.Option(8.0, help="Request body limit, MiB: 413"),
              max_pixels: int = typer.Option(4096 * 4096, help="Decoded image pixel limit: 413"),
              max_new_tokens: int = typer.Option(256, help="Language models: most tokens per request: 422"),
              max_text_chars: int = typer.Option(8192, help="Language models: longest prompt, characters: 422"),
              access_log: bool = typer.Option(False, "--access-log/--no-access-log", help="Log every request")):
    """HTTP inference server: POST /v1/predict, GET /healthz /readyz /metrics /docs."""
    from r1.serve.app import ServeConfig, check_model, serve

    _console_logging()
    cfg = ServeConfig(model=str(model), runtime=runtime, host=host, port=port, max_batch=max_batch,
                      max_wait_ms=max_wait_ms, max_queue=max_queue, timeout_ms=timeout_ms, threads=threads,
                      inference=inference, max_body_bytes=int(max_body_mb * (1 << 20)), max_pixels=max_pixels,
                      max_new_tokens=max_new_tokens, max_text_chars=max_text_chars, access_log=access_log)
    check_model(cfg)
    serve(cfg)


@app.command("bench")
def bench_cmd(target: str = typer.Argument(..., help="A model (run dir, .safetensors, .onnx), or `serve`"),
              url: Optional[str] = typer.Argument(None, help="With `serve`: the server URL"),
              runtime: Optional[str] = typer.Option(None, help="Only this runtime (default: compare all)"),
              batch_sizes: str = typer.Option("1,8,32", help="In-process batch sizes"),
              runs: int = typer.Option(30, help="Timed runs per batch size (>= 20 for p95)"),
              threads: int = typer.Option(1, help="Inference threads"),
              concurrency: str = typer.Option("1,8,32", help="`serve`: concurrent clients, comma-separated"),
              duration: float = typer.Option(20.0, help="`serve`: seconds per concurrency level"),
              max_requests: int = typer.Option(100_000, help="`serve`: request cap per level"),
              client: str = typer.Option("raw", help="`serve`: raw (keep-alive asyncio streams) or httpx"),
              json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the rows here")):
    """`r1 bench MODEL`: in-process latency/throughput per runtime and batch size.
    `r1 bench serve URL`: HTTP load test (throughput, p50/p95/p99)."""
    from r1.bench.cli import run_bench

    _console_logging()
    table, rows = run_bench(target, url, runtime, batch_sizes, runs, threads, concurrency, duration, max_requests,
                            client)
    typer.echo(table)
    if json_out:
        json_out.write_text(json.dumps(rows, indent=2))


def main() -> None:
    try:
        app(standalone_mode=False)
    except R1Error as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(err.exit_code)
    except (typer.Exit, typer.Abort) as err:
        sys.exit(getattr(err, "exit_code", 1))
    except Exception as err:  # click usage errors carry their own exit code
        import click
        if isinstance(err, click.ClickException):
            err.show()
            sys.exit(err.exit_code)
        if isinstance(err, KeyboardInterrupt):
            sys.exit(130)
        raise


if __name__ == "__main__":
    main()
