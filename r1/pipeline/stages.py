"""What each pipeline stage kind does. Every runner returns its output path (run dir or .onnx)."""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from r1.artifacts import load_model, read_info, save_artifact
from r1.config import load_config
from r1.errors import ConfigError
from r1.family import get_family
from r1.pipeline.recipe import ExportStage, PruneStage, QuantizeStage, Recipe, TrainStage, WidthStage, train_config

log = logging.getLogger("r1.pipeline")


def run_train(recipe: Recipe, stage: TrainStage, outputs: dict[str, str], out_dir: Path) -> str:
    from r1.train import fit

    cfg = train_config(recipe, stage, lambda ref: outputs[ref])
    resume = (out_dir / "checkpoints" / "last.pt").is_file()  # an interrupted stage continues
    fit(cfg, resume=resume)
    return str(out_dir)


def run_prune(recipe: Recipe, stage: PruneStage, outputs: dict[str, str], out_dir: Path) -> str:
    """Progressive pruning: `step` of the channels per round, fine-tuning after each, until `target`
    (a reduction of parameters or of multiply-accumulates, `by`). Each round's params, MACs and
    measured batch-1 latency go to prune.json side by side."""
    from r1.compress.prune import count_params, group_sizes
    from r1.config import to_dict
    from r1.train import fit

    source = Path(outputs[stage.source])
    model = load_model(source)
    prune_l1 = get_family(model.r1_family).hook("prune", f"stage {stage.name}: structured pruning")
    base_cfg = source / "config.yaml"
    if not base_cfg.is_file():
        raise ConfigError(f"stage {stage.name}: {source} has no config.yaml to fine-tune with")
    reference, source_cfg = group_sizes(model), to_dict(model.r1_config)
    family, meta = model.r1_family, model.r1_meta
    costs = [_cost(model, family, meta)]
    start = costs[0][stage.by]

    def reduction(m) -> float:
        return 1 - _cost(m, family, meta, timed=False)[stage.by] / start

    current, rnd = source, 0
    while reduction(model) < stage.target:
        rnd += 1
        pruned = prune_l1(model, stage.step, reference)
        if count_params(pruned) == count_params(model):
            log.warning("prune: nothing left to remove at round %d (%s reduction %.1f%%)", rnd, stage.by,
                        100 * reduction(model))
            break
        info = read_info(current)
        step_dir = out_dir / f"round{rnd:02d}"
        last = reduction(pruned) >= stage.target
        steps = max(stage.finetune_steps, stage.final_steps) if last else stage.finetune_steps
        save_artifact(pruned, step_dir / "pruned", info["meta"], info["data"])
        # the pruned model's config fields that differ from the source's config (its channel counts)
        shape = [f"model.{k}={_override_value(v)}" for k, v in to_dict(pruned.r1_config).items()
                 if source_cfg.get(k) != v]
        overrides = [*shape, f"train.init_from={step_dir / 'pruned'}",
                     f"train.max_steps={steps}", "train.eval_every=0",
                     f"run.dir={step_dir / 'finetune'}", *recipe.overrides, *stage.overrides]
        log.info("prune round %d: %d -> %d params (%.1f%% below the source), fine-tuning %d steps", rnd,
                 count_params(model), count_params(pruned), 100 * (1 - count_params(pruned) / start), steps)
        if steps:  # fine-tuning keeps the source's distillation teacher, if it had one
            ft = step_dir / "finetune"
            fit(load_config(base_cfg, overrides), resume=(ft / "checkpoints" / "last.pt").is_file())
            current = ft
        else:
            current = step_dir / "pruned"
        model = load_model(current)
        costs.append(_cost(model, family, meta))
        log.info("prune round %d: params %.1f%%, MACs %.1f%%, batch-1 latency %.1f%% of the source", rnd,
                 *(100 * costs[-1][k] / costs[0][k] for k in ("params", "macs", "latency_ms")))
    for name in ("model.safetensors", "model.json", "metrics.json", "config.yaml", "history.jsonl"):
        if (current / name).is_file() and current != out_dir:
            shutil.copy2(current / name, out_dir / name)
    (out_dir / "prune.json").write_text(json.dumps(
        {"source": str(source), "by": stage.by, "params_before": costs[0]["params"],
         "params_after": costs[-1]["params"], "rounds": rnd, "reduction": reduction(model),
         "per_round": costs}, indent=2))
    return str(out_dir)


def _cost(model, family: str, meta: dict, timed: bool = True) -> dict:
    """Parameters, multiply-accumulates of one example input, and (timed) torch batch-1 latency (ms, median)."""
    import torch

    from r1.bench.latency import measure_latency
    from r1.compress.prune import count_macs_of, count_params

    one = get_family(family).hook("example_inputs", "benchmark inputs")(meta, 1, torch.Generator().manual_seed(0))
    out = {"params": count_params(model), "macs": count_macs_of(model, one)}
    if timed:
        with torch.no_grad():
            out["latency_ms"] = round(measure_latency(model.eval(), one, runs=30, warmup=5)["p50"] * 1e3, 4)
    return out


def _override_value(value) -> str:
    """A config value as the right-hand side of a dotted override (lists in YAML flow style)."""
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def run_export(recipe: Recipe, stage: ExportStage, outputs: dict[str, str], out_dir: Path) -> str:
    from r1.onnx.export import export_onnx

    source = outputs[stage.source]
    out = out_dir / "model.onnx"
    report = export_onnx(source, out, opset=stage.opset)
    _keep_data_config(source, out_dir)
    (out_dir / "export.json").write_text(json.dumps(report, indent=2))
    return str(out)


def run_quantize(recipe: Recipe, stage: QuantizeStage, outputs: dict[str, str], out_dir: Path) -> str:
    from r1.compress.quantize import quantize_artifact

    source = outputs[stage.source]
    out = quantize_artifact(source, out_dir, method=stage.method, calib_batches=stage.calib_batches,
                            keep_float=stage.keep_float, per_channel=stage.per_channel,
                            reduce_range=stage.reduce_range, ops=stage.ops, tolerance=stage.tolerance)
    _keep_data_config(source, out_dir)
    return str(out)


def run_width(recipe: Recipe, stage: WidthStage, outputs: dict[str, str], out_dir: Path) -> str:
    """Cut one width out of a slimmable model (one with `widths` and `at_width(width)`) as a plain run dir."""
    source = outputs[stage.source]
    model = load_model(source)
    if not hasattr(model, "at_width"):
        raise ConfigError(f"stage {stage.name}: {source} is not a slimmable model")
    if stage.width not in model.widths:
        raise ConfigError(f"stage {stage.name}: width {stage.width} is not one of {model.widths}")
    info = read_info(source)
    save_artifact(model.at_width(stage.width), out_dir, info["meta"], info["data"])
    return str(out_dir)


def run_tune(recipe: Recipe, stage, outputs: dict[str, str], out_dir: Path) -> str:
    """A hyper-parameter study in the stage dir (continued when interrupted); the output is the best
    trial's run dir, so later stages use `@<stage>` as a trained model (its config.yaml included)."""
    from r1.tune.study import TuneOptions, run_study

    for what in ("config", "space"):
        if not getattr(stage, what):
            raise ConfigError(f"stage {stage.name}: {what} is required for tune stages")
    summary = run_study(TuneOptions(str(recipe.base / stage.config), str(recipe.base / stage.space), stage.trials,
                                    str(out_dir), "", stage.jobs, stage.pruner, stage.seed, stage.startup,
                                    [*recipe.overrides, *stage.overrides]))
    return summary["best"]["run_dir"]


def _keep_data_config(source: str, out_dir: Path) -> None:
    """ONNX outputs keep the source's model.json beside them, so they can be evaluated on its data."""
    src = Path(source)
    info = (src if src.is_dir() else src.parent) / "model.json"
    if info.is_file():
        shutil.copy2(info, out_dir / "model.json")


RUNNERS = {"train": run_train, "prune": run_prune, "export": run_export, "quantize": run_quantize,
           "width": run_width, "tune": run_tune}
