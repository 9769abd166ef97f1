"""The commands that take a trained model (a run dir, model.safetensors, .onnx or a TensorRT engine):
`r1 eval`, `predict`, `export`, `bench`, `serve`, and `r1 models`, the registry's table."""
from __future__ import annotations

import json
from pathlib import Path

import typer

from r1.cli.console import console_logging
from r1.command_spec import Arg, Command, Flag, Invocation
from r1.config_commands import ServeConfig
from r1.errors import ConfigError
from r1.outputs import check_file, check_folder, output_file, record_file, write_text

MODEL = "Run dir, model.safetensors, .onnx or TensorRT engine"


def eval_cmd(inv: Invocation) -> None:
    from r1.evaluate.artifact import evaluate_artifact

    cfg, model = inv.settings(), inv.args["model"]
    console_logging()
    if cfg.split not in ("val", "test"):
        raise ConfigError(f"--split: {cfg.split!r} is not allowed; allowed: val, test")
    if cfg.json:
        check_file(cfg.json, "--json")
    if cfg.attack:
        if cfg.runtime not in ("", "torch"):
            raise ConfigError(f"--attack: runs with the torch runtime only, not --runtime {cfg.runtime}")
        from r1.robust.evaluate import evaluate_attack
        metrics = evaluate_attack(model, cfg.split, inv.passed, cfg.attack, cfg.eps, cfg.steps)
    else:
        metrics = evaluate_artifact(model, cfg.split, inv.passed, runtime=cfg.runtime or None)
    text = json.dumps(metrics, indent=2)
    typer.echo(text)
    if cfg.json:
        write_text(cfg.json, text, "--json")


def predict(inv: Invocation) -> None:
    from r1.predict import predict_files

    cfg, model = inv.settings(), inv.args["model"]
    console_logging()
    out = check_folder(cfg.out, "--out", "predict") if cfg.out else None  # created once the model has loaded
    if cfg.coco_json:
        check_file(cfg.coco_json, "--coco-json")
    records = []
    for record in predict_files(model, inv.args["images"], out_dir=out,
                                top_k=cfg.top_k, batch_size=cfg.batch_size, runtime=cfg.runtime or None,
                                threads=cfg.threads, draw_options={"score_thresh": cfg.draw_threshold},
                                input_options={"question": cfg.question or None}):
        try:
            line = json.dumps(record, allow_nan=False)
        except ValueError:  # NaN is not JSON: broken weights or a preprocess std of 0
            from r1.errors import NonFiniteOutput
            raise NonFiniteOutput(f"{record.get('file', model)}: the model's output is not finite (NaN/inf); "
                                  f"its weights or preprocessing (std 0?) are broken") from None
        typer.echo(line)
        records.append(record)
    if cfg.coco_json:
        from r1.predict import write_results
        record_file(write_results(model, records, "coco", output_file(cfg.coco_json, "--coco-json")))
        typer.echo(f"COCO results: {cfg.coco_json}", err=True)


def export_cmd(inv: Invocation) -> None:
    cfg = inv.settings()
    from r1.export.cli import run_export

    console_logging()
    typer.echo(json.dumps(run_export(inv.args["model"], cfg.format, cfg.dynamic_batch, cfg.opset,
                                     Path(cfg.out) if cfg.out else None, cfg.nms, cfg.fp16, cfg.int8,
                                     cfg.max_batch, triton=cfg.triton_settings(), hw=cfg.hw_range()), indent=2))


def serve_args(args: dict) -> dict:
    """`r1 serve MODEL` or `r1 serve NAME=MODEL ...` -> serve.model or serve.variants."""
    from r1.serve.variants import split_variants

    model, variants = split_variants(args["args"])
    return {"model": model, "variants": variants}


def serve_cmd(inv: Invocation) -> None:
    cfg = inv.settings()
    if cfg.variants and cfg.model:
        raise ConfigError("serve: give one MODEL or NAME=MODEL variants (serve.variants), not both")
    if not cfg.model and not cfg.variants:
        raise ConfigError("serve.model: no model given; pass MODEL (a run dir, .safetensors or .onnx) "
                          "or set serve.model in --config")
    from r1.serve.server import check_model, serve

    console_logging()
    check_model(cfg)
    serve(cfg)


def bench_cmd(inv: Invocation) -> None:
    plain = inv.args["args"]
    if len(plain) > 1:
        raise ConfigError(f"r1 bench: unexpected argument {plain[1]!r}; usage: r1 bench MODEL|serve [URL] "
                          "[bench.KEY=VALUE ...]")
    cfg = inv.settings()
    if cfg.json:
        check_file(cfg.json, "--json")
    from r1.bench.cli import run_bench

    console_logging()
    table, rows = run_bench(inv.args["target"], plain[0] if plain else None, cfg.runtime or None,
                            ",".join(map(str, cfg.batch_sizes)), cfg.runs, cfg.threads,
                            ",".join(map(str, cfg.concurrency)), cfg.duration, cfg.max_requests, cfg.client)
    typer.echo(table)
    if cfg.json:
        write_text(cfg.json, json.dumps(rows, indent=2), "--json")


def mib(value: float, flag: str) -> int:
    return int(value * (1 << 20))


INTS = "r1.bench.cli:parse_ints"
BODY_BYTES = ServeConfig.__dataclass_fields__["max_body_bytes"].default
COMMANDS = [
    Command("eval", "Evaluate a trained model on a split of its data (or of data given by overrides).", eval_cmd,
            "eval", passes=("data", "model"),
            overrides_help="eval.KEY=VALUE, or data.* / model.* overrides, e.g. data.root=DIR model.active_width=0.5",
            args=(Arg("model", "Run dir or model.safetensors"),),
            flags=(Flag("split"), Flag("json", "--json", "json_out", path=True), Flag("attack"), Flag("eps"),
                   Flag("steps"), Flag("runtime"))),
    Command("predict", "Predict on image files; prints one JSON object per image.", predict, "predict",
            args=(Arg("model", MODEL), Arg("images", "Image files, then predict.KEY=VALUE overrides", many=True)),
            flags=(Flag("out", path=True), Flag("top_k", bounds=True), Flag("draw_threshold", bounds=True),
                   Flag("coco_json", path=True), Flag("question"), Flag("runtime"), Flag("threads"),
                   Flag("batch_size"))),
    Command("export", "Export to ONNX (verified against torch with onnxruntime on another batch size), TensorRT, "
            "a Triton repository or an ExecuTorch program (XNNPACK, batch 1; verified in the ExecuTorch runtime).",
            export_cmd, "export", args=(Arg("model", "Run dir, model.safetensors, or (for tensorrt, triton) an .onnx"),),
            flags=(Flag("format"), Flag("dynamic_batch"), Flag("opset"), Flag("out", path=True),
                   Flag("nms"), Flag("fp16"), Flag("int8"), Flag("max_batch"), Flag("dynamic_hw"), Flag("min_size"),
                   Flag("opt_size"), Flag("max_size"))),
    Command("serve", "HTTP inference server: POST /v1/predict (/v1/completions for language models), GET /healthz "
            "/readyz /metrics /docs /v1/variants. A/B and canary: `r1 serve stable=RUN_A canary=RUN_B --traffic "
            "stable=95,canary=5` (relative weights).", serve_cmd, "serve", from_args=serve_args,
            arg_names={"model": "MODEL", "variants": "NAME=MODEL"},
            args=(Arg("args", "Run dir, model.safetensors or .onnx (or serve.model in --config), or NAME=MODEL "
                      "variants, then overrides such as serve.max_batch=16", path=False, many=True, optional=True,
                      metavar="[MODEL | NAME=MODEL...] [serve.KEY=VALUE]..."),),
            flags=(Flag("host"), Flag("port"), Flag("runtime"), Flag("max_batch"), Flag("max_wait_ms"),
                   Flag("max_queue"), Flag("timeout_ms"), Flag("threads"), Flag("inference"),
                   Flag("max_body_bytes", "--max-body-mb", "max_body_mb", parse=mib, type=float,
                        help=f"Request body limit, MiB: 413 (default {BODY_BYTES / (1 << 20):g}; serve.max_body_bytes)"),
                   Flag("max_pixels"), Flag("max_new_tokens"), Flag("max_text_chars"), Flag("access_log"),
                   Flag("traffic", parse="r1.serve.variants:parse_traffic",
                        help="Relative weight per variant, e.g. stable=95,canary=5: shares are weight / sum, so "
                             "stable=90,canary=20 sends 81.8% / 18.2% (the server logs the shares) (serve.traffic)"),
                   Flag("stable_variant"), Flag("admin_token", envvar="R1_ADMIN_TOKEN"))),
    Command("bench", "`r1 bench MODEL`: in-process latency/throughput per runtime and batch size; "
            "`r1 bench serve URL`: an HTTP load test (throughput, p50/p95/p99).",
            bench_cmd, "bench",
            args=(Arg("target", "A model (run dir, .safetensors, .onnx), or `serve`", path=False),
                  Arg("args", "With `serve`: the server URL; then overrides such as bench.runs=50", path=False,
                      many=True, optional=True, metavar="[URL] [bench.KEY=VALUE]...")),
            flags=(Flag("runtime"), Flag("batch_sizes", parse=INTS, note="Comma-separated."), Flag("runs"),
                   Flag("threads"), Flag("concurrency", parse=INTS, note="Comma-separated."), Flag("duration"),
                   Flag("max_requests"), Flag("client"), Flag("json", "--json", "json_out", path=True))),
]


def models(pattern: str = typer.Argument("*", help="Glob over model names (default '*')", show_default=False),
           flops: bool = typer.Option(False, help="Also count GFLOPs (detection) at each model's input size "
                                                  "(default False)", show_default=False)):
    """List registered models and their flavors with parameter counts."""
    from r1.model_table import model_rows

    rows = model_rows(pattern, flops)
    header = ["model", "family", "flavor", "params"] + (["GFLOPs"] if flops else [])
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    for r in [header] + rows:
        typer.echo("  ".join(str(v).ljust(w) for v, w in zip(r, widths)))
    typer.echo("(counted with 10 output classes / a vocabulary of 10; the data sets the real number)")
