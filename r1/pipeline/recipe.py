"""Pipeline recipes: a list of stages, each a typed section chosen by its `kind`.

    name: quickstart
    dir: runs/quickstart
    overrides: [run.threads=0]          # applied to every train stage
    stages:
      - {name: teacher, kind: train, config: ../configs/cls/digits-teacher.yaml}
      - {name: student_kd, kind: train, config: ../configs/cls/digits.yaml, overrides: [distill.teacher=@teacher]}
      - {name: pruned, kind: prune, source: student_kd}
      - {name: int8, kind: quantize, source: pruned, method: static}
      - {name: report, kind: bench, rows: [teacher, student_kd, pruned, int8]}

`@stage` in a value names that stage's output (a run dir or an .onnx file).
A recipe is validated whole, train configs included, before any stage runs.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from r1.config import from_dict, load_config, opt, read_yaml
from r1.errors import ConfigError

REF = re.compile(r"@([A-Za-z0-9_\-]+)")


@dataclass
class TrainStage:
    name: str = opt("", "Stage name: its output is <pipeline dir>/<name>.")
    kind: str = opt("train", "Stage kind.")
    config: str = opt("", "Training YAML, relative to the recipe file; @stage: that stage's resolved config.yaml.")
    overrides: list[str] = opt([], "Dotted overrides; @stage is replaced by that stage's output.")


@dataclass
class PruneStage:
    name: str = opt("", "Stage name.")
    kind: str = opt("prune", "Stage kind.")
    source: str = opt("", "Stage whose model is pruned.")
    target: float = opt(0.4, "Stop once `by` is reduced by this fraction.", min=0.0, max=0.95)
    by: str = opt("params", "What `target` reduces: params, or macs (multiply-accumulates of one input: what "
                            "latency follows).", choices=("params", "macs"))
    step: float = opt(0.05, "Fraction of each group's original channels removed per step.", min=0.01, max=0.5)
    finetune_steps: int = opt(40, "Optimizer steps of fine-tuning after each pruning step.", min=0)
    final_steps: int = opt(200, "Fine-tuning steps after the last pruning step (recovers accuracy).", min=0)
    overrides: list[str] = opt([], "Overrides for the fine-tuning runs (e.g. optim.lr=1e-3).")


@dataclass
class QuantizeStage:
    name: str = opt("", "Stage name.")
    kind: str = opt("quantize", "Stage kind.")
    source: str = opt("", "Stage whose model is quantized.")
    method: str = opt("static", "static: int8 QDQ with calibration; dynamic: int8 weights of Linear/MatMul.",
                      choices=("static", "dynamic"))
    calib_batches: int = opt(8, "Training batches used to calibrate activation ranges (static).", min=1)
    keep_float: list[str] = opt(["first", "last"], "Layers kept in float: first and/or last.")
    per_channel: bool = opt(True, "Per-channel weight scales (static).")
    reduce_range: bool = opt(True, "7-bit weights: avoids u8 x s8 saturation on CPUs without VNNI (static).")
    ops: str = opt("weights", "Ops in int8 (static): weights (Conv/Gemm/MatMul), all (every op onnxruntime runs "
                              "in int8), auto (each way timed beside float on this CPU, the fastest within "
                              "`tolerance` on val kept; table in int8_choice.md).", choices=("weights", "all", "auto"))
    tolerance: float = opt(0.01, "ops=auto: val metric drop allowed vs the float graph.", min=0.0)


@dataclass
class ExportStage:
    name: str = opt("", "Stage name.")
    kind: str = opt("export", "Stage kind.")
    source: str = opt("", "Stage whose model is exported to ONNX.")
    opset: int = opt(18, "ONNX opset.", min=13)


@dataclass
class WidthStage:
    name: str = opt("", "Stage name.")
    kind: str = opt("width", "Stage kind.")
    source: str = opt("", "Stage holding a slimmable model (r1_slim_mobilenetv3).")
    width: float = opt(0.5, "Width to cut out as a plain model (one of the model's widths).", min=0.05, max=1.0)


@dataclass
class TuneStage:
    name: str = opt("", "Stage name: the study dir is <pipeline dir>/<name>; its output is the best trial's run dir.")
    kind: str = opt("tune", "Stage kind.")
    config: str = opt("", "Training YAML whose hyper-parameters are searched, relative to the recipe file.")
    space: str = opt("", "Search space YAML (see `r1 tune`), relative to the recipe file.")
    trials: int = opt(20, "Finished (complete + pruned) trials.", min=1)
    jobs: int = opt(1, "Trials in parallel processes (cores split between them).", min=1)
    pruner: str = opt("median", "Pruner fed by each trial's periodic evaluations.", choices=("median", "hyperband", "none"))
    startup: int = opt(5, "Random trials before TPE, and before the median pruner prunes.", min=0)
    seed: int = opt(0, "Sampler seed.", min=0)
    overrides: list[str] = opt([], "Dotted overrides of every trial's config.")


@dataclass
class BenchStage:
    name: str = opt("", "Stage name.")
    kind: str = opt("bench", "Stage kind.")
    rows: list[str] = opt([], "Stages to compare, one report row each.")
    baselines: list[str] = opt([], "Reference stages (e.g. other architectures trained the same way): measured "
                                   "and shown after the rows, marked baseline; never the verdict's pick, its best "
                                   "metric or on its Pareto front.")
    runs: int = opt(30, "Timed batch-1 runs per model (median and p95 reported).", min=20)
    throughput_batch: int = opt(32, "Batch size of the throughput measurement.", min=1)
    threads: int = opt(0, "Threads for every measurement (0: physical cores).", min=0)
    tolerance: float = opt(0.0, "Metric drop (vs the best row) the verdict accepts in the variant it names; "
                                "0: the family's (cls 0.015 accuracy, det 0.05 mAP, lm 0.02 loss).", min=0.0)


KINDS = {"train": TrainStage, "prune": PruneStage, "quantize": QuantizeStage, "export": ExportStage,
         "width": WidthStage, "tune": TuneStage, "bench": BenchStage}


@dataclass
class Recipe:
    name: str
    dir: Path
    overrides: list[str]
    stages: list
    base: Path  # folder of the recipe file: relative paths start here


# Each stage writes <pipeline dir>/<stage>: an override of these would send every stage to one place.
STAGE_OWNED = ("run.dir", "run.name")


def load_recipe(path: str | Path, overrides: list[str] | None = None, dir: str | Path | None = None) -> Recipe:
    """Parse and validate a recipe. `overrides` (k=v) go to every train stage, after the recipe's own;
    `dir` replaces the recipe's pipeline directory (the root of every stage's output)."""
    path = Path(path)
    data = read_yaml(path)
    unknown = set(data) - {"name", "dir", "overrides", "stages"}
    if unknown:
        raise ConfigError(f"{path}: unknown key {sorted(unknown)[0]}; allowed: name, dir, overrides, stages")
    _refuse_stage_owned(overrides or [], "")
    _refuse_stage_owned(data.get("overrides") or [], f"{path}: overrides: ")
    stages, names = [], []
    for i, raw in enumerate(data.get("stages") or []):
        if not isinstance(raw, dict):
            raise ConfigError(f"stages[{i}]: expected a mapping with name and kind")
        kind = raw.get("kind")
        if kind not in KINDS:
            raise ConfigError(f"stages[{i}].kind: unknown stage kind {kind!r}; allowed: {', '.join(KINDS)}")
        stage = from_dict(KINDS[kind], raw, f"stages[{i}]")
        _refuse_stage_owned(getattr(stage, "overrides", []), f"stage {stage.name}: ")
        if not stage.name or stage.name in names:
            raise ConfigError(f"stages[{i}].name: {'missing' if not stage.name else 'duplicate ' + repr(stage.name)}")
        for ref in stage_refs(stage):
            if ref not in names:
                raise ConfigError(f"stage {stage.name}: refers to {ref!r}, which is not an earlier stage "
                                  f"(earlier: {', '.join(names) or 'none'})")
        stages.append(stage)
        names.append(stage.name)
    if not stages:
        raise ConfigError(f"{path}: no stages")
    name = data.get("name") or path.stem
    recipe = Recipe(name, Path(dir or data.get("dir") or f"runs/{name}"),
                    list(data.get("overrides") or []) + list(overrides or []), stages, path.parent)
    for stage in stages:
        if isinstance(stage, TrainStage):
            train_config(recipe, stage, lambda ref: str(recipe.dir / ref))  # fail now, not mid-pipeline
    return recipe


def _refuse_stage_owned(overrides: list[str], where: str) -> None:
    for text in overrides:
        key = str(text).split("=", 1)[0].strip()
        if key in STAGE_OWNED:
            raise ConfigError(f"{where}override {text!r} is not allowed: each stage writes <pipeline dir>/<stage>, "
                              f"so {key} would make stages collide; set the pipeline directory with "
                              f"`r1 pipeline RECIPE --dir DIR` (or the recipe's dir:)")


def stage_refs(stage) -> list[str]:
    refs = [stage.source] if getattr(stage, "source", "") else []
    if getattr(stage, "config", "").startswith("@"):
        refs.append(stage.config[1:])
    refs += list(getattr(stage, "rows", [])) + list(getattr(stage, "baselines", []))
    for text in getattr(stage, "overrides", []):
        refs += REF.findall(text)
    if isinstance(stage, (PruneStage, QuantizeStage, ExportStage, WidthStage)) and not stage.source:
        raise ConfigError(f"stage {stage.name}: source is required (the stage whose model it reads)")
    return refs


def train_config(recipe: Recipe, stage, resolve):
    """The training config of a train stage (or of a fine-tuning run), with @refs resolved."""
    overrides = [REF.sub(lambda m: resolve(m.group(1)), o) for o in recipe.overrides + stage.overrides]
    if not stage.config:
        raise ConfigError(f"stage {stage.name}: config is required for train stages")
    if stage.config.startswith("@"):
        cfg_path = Path(resolve(stage.config[1:])) / "config.yaml"
        if not cfg_path.is_file():  # validating before the source stage ran: nothing to check yet
            return None
    else:
        cfg_path = recipe.base / stage.config
    cfg = load_config(cfg_path, overrides + [f"run.dir={recipe.dir / stage.name}", f"run.name={stage.name}"])
    if cfg.distill.teacher and not REF.search(" ".join(stage.overrides)) and not Path(cfg.distill.teacher).exists():
        raise ConfigError(f"stage {stage.name}: distill.teacher {cfg.distill.teacher} does not exist")
    return cfg
