"""Typed configuration: dataclasses, YAML files that are instances of them, dotted overrides.

Every field is declared once with `opt(default, help, ...)`; its help text is what
`r1 config explain` prints. A YAML file is parsed strictly: unknown keys, wrong types and
impossible values raise `ConfigError` naming the dotted key and what is allowed.

Sections whose content depends on a name (`model`, `data`) are *variant* sections: the
`name` key picks a registered dataclass (see `variant`), so each model or dataset declares
exactly the fields it understands.
"""
from __future__ import annotations

import copy
import dataclasses
import reprlib
import types
import typing
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml

from r1.errors import ConfigError


def opt(default: Any, help: str, *, choices: tuple | None = None, min: float | None = None,
        max: float | None = None) -> Any:
    """A documented config field. Mutable defaults (lists, dicts) are copied per instance."""
    meta = {"help": help, "choices": choices, "min": min, "max": max}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return field(default=default, metadata=meta)


# ----------------------------------------------------------------------------- variants
class Variant:
    """Base for sections chosen by their `name` field. Subclasses register with `variant`."""

    _variants: dict[str, type] = {}
    _flavors: dict[str, dict[str, dict]] = {}

    @classmethod
    def load_light_variants(cls) -> None:
        """Import the torch-free modules declaring variant config classes (`r1/models/<family>/config.py`)."""
        import r1.models
        r1.models.light_configs()

    @classmethod
    def load_variants(cls) -> None:
        """Import the modules that register every variant of this section (may import torch)."""

    @classmethod
    def find_variant(cls, name: str) -> type | None:
        """The config class registered as `name`: from the light modules if declared there, else after
        importing every variant's module."""
        if name not in cls._variants:
            cls.load_light_variants()
        if name not in cls._variants:
            cls.load_variants()
        return cls._variants.get(name)

    @classmethod
    def presets(cls, data: dict) -> dict:
        """Field values implied by `data` (e.g. a model flavor); explicit keys override them."""
        return {}


def variant(base: type, name: str, flavors: dict[str, dict] | None = None):
    """Class decorator: register dataclass `cls` as the `name` variant of section `base`, with its
    `flavors` (named presets of its fields) where the section has them."""
    def wrap(cls):
        base._variants[name] = cls
        if flavors is not None:
            base._flavors[name] = flavors
        return cls
    return wrap


def variant_base(cls):
    """Class decorator marking a Variant base that gets its own registration tables."""
    cls._variants = {}
    cls._flavors = {}
    return cls


# ----------------------------------------------------------------------------- sections
@dataclass
class RunConfig:
    name: str = opt("run", "Run name; the run directory defaults to runs/<name>.")
    dir: str = opt("", "Run directory (config, checkpoints, weights, metrics, logs). Empty: runs/<name>.")
    seed: int = opt(0, "Seed for weights, data order and augmentation.", min=0)
    threads: int = opt(0, "Torch intra-op threads. 0: the number of physical cores.", min=0)
    device: str = opt("auto", "Device.", choices=("auto", "cpu", "cuda"))

    def validate(self, prefix: str) -> None:
        parts = Path(self.name).parts
        if not self.name or Path(self.name).is_absolute() or ".." in parts:
            raise ConfigError(f"{prefix}.name: {show(self.name)} must be a relative name inside runs/ (no '..', "
                              "not absolute); set run.dir for a directory elsewhere")

    def resolved_dir(self) -> Path:
        return Path(self.dir or f"runs/{self.name}")


@variant_base
@dataclass
class ModelConfig(Variant):
    name: str = opt("r1_mobilenetv3", "Registered model name (see `r1 models`).")
    flavor: str = opt("tiny", "Size preset of the model (see `r1 models`).")
    num_classes: int = opt(0, "Output classes. 0: taken from the data.", min=0)
    pretrained: str = opt("", "Local weights file (.safetensors/.pt) to start from. Nothing is downloaded.")

    @classmethod
    def load_variants(cls) -> None:
        import r1.models
        r1.models.load_all()

    @classmethod
    def presets(cls, data: dict) -> dict:
        name, flavor = data.get("name", cls.name), data.get("flavor", cls.flavor)
        if cls.find_variant(name) is None or name not in cls._flavors:
            from r1.registry import flavor_preset  # unknown name: its error lists the registered models
            return flavor_preset(name, flavor)
        if flavor not in cls._flavors[name]:
            raise ConfigError(f"model.flavor: unknown flavor {show(flavor)} for {name}; "
                              f"allowed: {', '.join(cls._flavors[name])}")
        return {"flavor": flavor, **cls._flavors[name][flavor]}


@variant_base
@dataclass
class DataConfig(Variant):
    name: str = opt("digits", "Dataset kind.")
    batch_size: int = opt(64, "Global training batch (split across processes under torchrun).", min=1)
    eval_batch_size: int = opt(256, "Batch size for evaluation.", min=1)
    num_workers: int = opt(0, "DataLoader worker processes (0: load in the training process).", min=0)

    @classmethod
    def load_variants(cls) -> None:
        import r1.data  # noqa: F401


@dataclass
class OptimConfig:
    name: str = opt("adamw", "Optimizer.", choices=("adamw", "sgd"))
    lr: float = opt(3e-3, "Peak learning rate.", min=0.0)
    weight_decay: float = opt(0.05, "Decoupled weight decay; never applied to norms and biases.", min=0.0)
    betas: list[float] = opt([0.9, 0.999], "AdamW betas.")
    eps: float = opt(1e-8, "AdamW epsilon.", min=0.0)
    momentum: float = opt(0.9, "SGD momentum.", min=0.0, max=1.0)
    nesterov: bool = opt(True, "SGD Nesterov momentum.")

    def validate(self, prefix: str) -> None:
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"{prefix}.betas: expected two numbers in [0, 1), got {show(self.betas)}")


@dataclass
class SchedConfig:
    name: str = opt("warmup_cosine", "LR schedule.", choices=("warmup_cosine", "onecycle", "constant"))
    warmup_steps: int = opt(-1, "Linear warmup steps (warmup_cosine). -1: 5% of the optimizer steps.", min=-1)
    min_lr_ratio: float = opt(0.01, "Final LR as a fraction of the peak (warmup_cosine).", min=0.0, max=1.0)
    pct_start: float = opt(0.25, "Share of steps spent rising (onecycle).", min=0.0, max=1.0)


@dataclass
class TrainConfig:
    epochs: int = opt(10, "Passes over the training set (ignored when max_steps > 0).", min=1)
    max_steps: int = opt(0, "Optimizer steps to run. 0: derived from epochs.", min=0)
    accum_steps: int = opt(1, "Micro-batches accumulated per optimizer step.", min=1)
    clip_grad: float = opt(0.0, "Clip the global gradient norm to this value. 0: no clipping.", min=0.0)
    grad_alarm: float = opt(100.0, "Log a warning when the gradient norm exceeds this.", min=0.0)
    amp: str = opt("auto", "Mixed precision: auto (fp16 on CUDA, fp32 on CPU), off, fp16 (CUDA), bf16 (CUDA, or CPUs with native bf16).",
                   choices=("auto", "off", "fp16", "bf16"))
    grad_ckpt: bool = opt(False, "Gradient checkpointing (recompute activations in backward).")
    ema: bool = opt(False, "Keep an exponential moving average of the weights and evaluate it.")
    ema_decay: float = opt(0.999, "EMA decay per optimizer step.", min=0.0, max=1.0)
    eval_every: int = opt(0, "Evaluate every N optimizer steps. 0: at the end of every epoch.", min=0)
    log_every: int = opt(10, "Log one line every N optimizer steps.", min=1)
    ckpt_every: int = opt(0, "Save checkpoints/last.pt every N optimizer steps. 0: at every evaluation.", min=0)
    monitor: str = opt("", "Metric that picks the best checkpoint and drives early stopping. Empty: the family's default.")
    monitor_mode: str = opt("auto", "Whether larger or smaller monitor values are better.", choices=("auto", "max", "min"))
    patience: int = opt(0, "Early stopping: evaluations without improvement before stopping. 0: off.", min=0)
    max_nonfinite: int = opt(5, "Abort after this many non-finite losses in a row (each such step is skipped).", min=1)
    max_bad_batches: float = opt(0.5, "Abort (exit 3, bad data) when more than this share of an epoch's training "
                                      "micro-batches has no decodable sample (also after an epoch's worth in a row); "
                                      "unreadable files are skipped, each logged once.", min=0.0, max=1.0)
    init_from: str = opt("", "Run directory or .safetensors whose weights initialise the model (no training state).")
    ewc_from: str = opt("", "Continual learning: a run dir (or its ewc.safetensors) of an earlier stage trained with "
                            "ewc_samples > 0; adds the loss `ewc` = ewc_lambda/2 * sum F_i (theta_i - theta*_i)^2. "
                            "Empty: no penalty.")
    ewc_lambda: float = opt(1.0, "EWC strength lambda (Fisher of per-sample mean losses).", min=0.0)
    parallel: str = opt("auto", "Multi-process training under torchrun: ddp (every rank holds the model and optimizer "
                        "state), zero1 (DDP + ZeroRedundancyOptimizer: optimizer state sharded 1/N), fsdp (FSDP2 "
                        "fully_shard per block / stage: parameters, gradients and optimizer state sharded 1/N), "
                        "none (one process). auto: ddp under torchrun, none in one process; a sharded mode in "
                        "one process trains unsharded (checkpoints resume across modes and process counts).",
                        choices=("auto", "none", "ddp", "fsdp", "zero1"))
    ewc_samples: int = opt(0, "After training, estimate the diagonal Fisher on this many training samples (one "
                              "backward each) and save it with the weights as ewc.safetensors, for a later stage's "
                              "ewc_from (summed with this stage's own ewc_from Fisher). 0: none.", min=0)


@dataclass
class DistillConfig:
    teacher: str = opt("", "Teacher run dir (or model.safetensors). Empty: no distillation.")
    temperature: float = opt(4.0, "Softmax temperature T of the KD loss (scaled by T^2).", min=0.1)
    alpha: float = opt(0.5, "Weight of the KD loss; the task loss gets 1 - alpha.", min=0.0, max=1.0)
    feature_weight: float = opt(0.0, "Weight of TinyBERT-style feature distillation (loss key `feature`): MSE "
                                     "between hidden states (the student's through a learned projection when "
                                     "widths differ; never saved) plus KL between attention maps of mapped "
                                     "layers. Families whose kd hook gives features only (mm: cross-modal "
                                     "layers). 0: off.", min=0.0)
    layer_map: list[int] = opt([], "Teacher layer distilled into each student layer (student layer i -> "
                                   "teacher layer layer_map[i], 0-based). Empty: uniform, i -> "
                                   "(i + 1) * teacher_layers // student_layers - 1.")

    def validate(self, prefix: str) -> None:
        if self.layer_map and not self.feature_weight:
            raise ConfigError(f"{prefix}.layer_map: {self.layer_map} is used by feature distillation only; "
                              f"set {prefix}.feature_weight > 0 or leave layer_map empty")
        if any(j < 0 for j in self.layer_map):
            raise ConfigError(f"{prefix}.layer_map: {self.layer_map} has a negative layer; allowed: teacher "
                              f"layers 0..teacher_layers - 1")


@dataclass
class QATConfig:
    enabled: bool = opt(False, "Quantization-aware training: fake-quantize weights and activations to int8.")
    keep_float: list[str] = opt(["first", "last"], "Layers left in float: first and/or last.")

    def validate(self, prefix: str) -> None:
        bad = set(self.keep_float) - {"first", "last"}
        if bad:
            raise ConfigError(f"{prefix}.keep_float: {sorted(bad)} not allowed; allowed: first, last")


@dataclass
class AdversarialConfig:
    method: str = opt("none", "Adversarial training (image classifiers): replace a share of each training batch "
                      "by attacked copies (r1.robust). none: off.", choices=("none", "fgsm", "pgd"))
    eps: float = opt(0.1, "L-inf budget of the attack in pixel units [0, 1], before normalisation (0.1 = 25/255).",
                     min=0.0, max=1.0)
    ratio: float = opt(0.5, "Share of each training batch replaced by its adversarial examples.", min=0.0, max=1.0)
    steps: int = opt(7, "PGD steps per batch (pgd only).", min=1)
    alpha: float = opt(0.0, "PGD step size in pixel units (pgd only). 0: 2.5 * eps / steps.", min=0.0, max=1.0)


@dataclass
class CurriculumConfig:
    schedule: str = opt("none", "Curriculum learning (r1.train.curriculum): serve the easiest items first (by the "
                        "training set's per-item difficulty), phasing the rest in. none: off; sqrt / linear: the "
                        "competence schedule.", choices=("none", "sqrt", "linear"))
    start: float = opt(0.2, "Share of the items (easiest first) served at the start.", min=0.01, max=1.0)
    steps: int = opt(0, "Optimizer steps until every item is served. 0: half of the run.", min=0)


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    sched: SchedConfig = field(default_factory=SchedConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    qat: QATConfig = field(default_factory=QATConfig)
    adversarial: AdversarialConfig = field(default_factory=AdversarialConfig)
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)


# ----------------------------------------------------------------------------- parsing
MESSAGE_VALUE_CHARS = 200  # a value quoted in an error message is cut to this many characters


def show(value: Any, limit: int = MESSAGE_VALUE_CHARS) -> str:
    """`repr(value)` for an error message, shortened: a config value can be huge (or recursive)."""
    short = reprlib.Repr()
    short.maxlevel, short.maxstring, short.maxother = 3, limit, limit
    short.maxlist = short.maxtuple = short.maxdict = short.maxset = 8
    text = short.repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


YAML11_BOOLS = {"on": True, "yes": True, "off": False, "no": False}


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against annotation `tp`; ints are accepted where floats are expected."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            if arg is type(None) and value is None:
                return None
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return _coerce(value, inner[0], key)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {show(value)}")
        args = typing.get_args(tp)
        item_tp = args[0] if args else Any
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {show(value)}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in YAML11_BOOLS:
            return YAML11_BOOLS[value.lower()]
        raise ConfigError(f"{key}: expected true or false, got {show(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {show(value)}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{key}: expected a number, got {show(value)}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {show(value)}")
    raise ConfigError(f"{key}: unsupported type {_type_name(tp)}")


def _pick_variant(cls: type, data: dict, key: str) -> type:
    if not (isinstance(cls, type) and issubclass(cls, Variant)):
        return cls
    default = next(f.default for f in fields(cls) if f.name == "name")
    name = data.get("name", default)
    found = cls.find_variant(name)
    if found is None:
        raise ConfigError(f"{key}.name: unknown {key} {show(name)}; allowed: {', '.join(sorted(cls._variants))}")
    return found


def from_dict(cls: type, data: dict | None, key: str = "") -> Any:
    """Build dataclass `cls` from a plain mapping, strictly. `key` is the dotted prefix for messages."""
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"{key or 'config'}: expected a mapping, got {show(data)}")
    cls = _pick_variant(cls, data, key)
    if issubclass(cls, Variant):
        data = {**cls.presets(data), **data}
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls) if f.init}
    unknown = [k for k in data if k not in known]
    if unknown:
        where = f"{key}.{unknown[0]}" if key else unknown[0]
        raise ConfigError(f"unknown key {where}; allowed: {', '.join(known)}")
    kwargs = {}
    for name, value in data.items():
        f, tp, dotted = known[name], hints[name], f"{key}.{name}" if key else name
        if is_dataclass(tp):
            kwargs[name] = from_dict(tp, value, dotted)
            continue
        value = _coerce(value, tp, dotted)
        _check_bounds(value, f.metadata, dotted)
        kwargs[name] = value
    obj = cls(**kwargs)
    if hasattr(obj, "validate"):
        obj.validate(key)
    return obj


def check_bounds(obj: Any, prefix: str) -> None:
    """Choices and min/max of every field of dataclass `obj` (for instances built in code, which
    skip `from_dict`); ConfigError naming `prefix.field`."""
    for f in fields(obj):
        _check_bounds(getattr(obj, f.name), f.metadata, f"{prefix}.{f.name}")


def _check_bounds(value: Any, meta: Any, key: str) -> None:
    choices, lo, hi = meta.get("choices"), meta.get("min"), meta.get("max")
    if value is None:  # an Optional field left unset
        return
    if choices and value not in choices:
        raise ConfigError(f"{key}: {show(value)} is not allowed; allowed: {', '.join(map(str, choices))}")
    if lo is not None and value < lo:
        raise ConfigError(f"{key}: {show(value)} is below the minimum {lo}")
    if hi is not None and value > hi:
        raise ConfigError(f"{key}: {show(value)} is above the maximum {hi}")


def to_dict(obj: Any) -> Any:
    """Dataclass -> plain nested dict (YAML-safe)."""
    return dataclasses.asdict(obj) if is_dataclass(obj) else obj


def _deep_merge(base: dict, top: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in top.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            # A different variant name replaces the section instead of merging into it.
            if "name" in v and v["name"] != out[k].get("name"):
                out[k] = copy.deepcopy(v)
            else:
                out[k] = _deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


MAX_YAML_NODES = 100_000  # nodes a YAML document may expand to, aliases counted at every use


class YAMLTooLarge(yaml.YAMLError):
    pass


class BudgetLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a document whose aliases expand past MAX_YAML_NODES nodes (an
    "alias bomb": 500 bytes that expand to 10^9 list items) or refer to themselves."""

    def compose_document(self):
        node = super().compose_document()
        _expanded_size(node, {}, set())
        return node


def _expanded_size(node: yaml.Node, sizes: dict[int, int], open_: set[int]) -> int:
    """Nodes of `node` with every alias expanded, counted without expanding (shared nodes counted once
    per use, from `sizes`); YAMLTooLarge past the budget or on a node that contains itself."""
    if id(node) in sizes:
        return sizes[id(node)]
    if id(node) in open_:
        raise YAMLTooLarge("a YAML alias refers to a node that contains it (recursive structure)")
    open_.add(id(node))
    if isinstance(node, yaml.MappingNode):
        children = [n for pair in node.value for n in pair]
    elif isinstance(node, yaml.SequenceNode):
        children = node.value
    else:
        children = []
    total = 1 + sum(_expanded_size(child, sizes, open_) for child in children)
    open_.discard(id(node))
    if total > MAX_YAML_NODES:
        raise YAMLTooLarge(f"aliases expand the document past {MAX_YAML_NODES} values")
    sizes[id(node)] = total
    return total


def load_yaml_text(text: str, where: str) -> Any:
    """YAML text -> Python data (safe types only, bounded alias expansion); ConfigError naming `where`."""
    try:
        return yaml.load(text, Loader=BudgetLoader)
    except YAMLTooLarge as err:
        raise ConfigError(f"{where}: refused: {err}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{where}{line}: invalid YAML ({show(getattr(err, 'problem', None) or err)})") from None
    except RecursionError:
        raise ConfigError(f"{where}: refused: YAML nested too deeply") from None


def read_yaml(path: str | Path, _chain: tuple[Path, ...] = ()) -> dict:
    """Read a YAML mapping, resolving `_base_: other.yaml` (or a list of files, merged in order; paths
    relative to the file) by deep merge: the file's own keys win."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    real = path.resolve()
    if real in _chain:
        cycle = " -> ".join(p.name for p in (*_chain[_chain.index(real):], real))
        raise ConfigError(f"{path}: _base_ include cycle ({cycle})")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read ({err})") from None
    data = load_yaml_text(text, str(path)) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    base = data.pop("_base_", None)
    bases = [base] if isinstance(base, str) else base
    if base is not None and not (isinstance(bases, list) and all(isinstance(b, str) and b for b in bases)):
        raise ConfigError(f"{path}: _base_: expected a file name or a list of file names, got {show(base)}")
    merged: dict = {}
    for name in bases or []:
        merged = _deep_merge(merged, read_yaml(path.parent / name, (*_chain, real)))
    return _deep_merge(merged, data) if merged else data


def parse_override(text: str) -> tuple[list[str], Any]:
    """`train.lr=3e-4` -> (['train', 'lr'], 0.0003). Values are parsed as YAML scalars."""
    if "=" not in text:
        raise ConfigError(f"override {show(text)}: expected key=value, e.g. optim.lr=3e-3")
    key, raw = text.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {show(text)}: empty key")
    try:
        value = yaml.load(raw, Loader=BudgetLoader) if raw != "" else ""
    except YAMLTooLarge as err:
        raise ConfigError(f"override {show(text)}: refused: {err}") from None
    except yaml.YAMLError:
        value = raw
    if isinstance(value, bool) and raw.strip().lower() not in ("true", "false"):
        value = raw.strip()  # train.amp=off is the word "off"; bool fields still take on/off/yes/no
    if isinstance(value, str) and any(c.isdigit() for c in raw):
        try:  # YAML 1.1 reads "3e-3" as a string; scientific notation is a number here.
            value = float(raw)
        except ValueError:
            pass
    return key.split("."), value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    data = copy.deepcopy(data)
    parsed = [parse_override(text) for text in overrides]
    # Variant switches (`model.name=...`) first, so the other overrides land in the new variant.
    parsed.sort(key=lambda kv: kv[0][-1] != "name")
    variants = {f.name for f in fields(Config) if issubclass(typing.get_type_hints(Config)[f.name], Variant)}
    for path, value in parsed:
        text = ".".join(path)
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {show(text)}: {part} is not a section")
        if path[-1] == "name" and len(path) == 2 and path[0] in variants and node.get("name", value) != value:
            # Switching a variant drops the old variant's fields that the new one may not know.
            node.clear()
        node[path[-1]] = value
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                cls: type = Config) -> Any:
    """YAML file (optional) + dotted overrides -> validated `cls` instance."""
    data = read_yaml(path) if path else {}
    data = apply_overrides(data, overrides or [])
    return from_dict(cls, data)


def save_config(cfg: Any, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


def explain(cls: type = Config, prefix: str = "") -> list[str]:
    """One line per field: dotted key, type, default, help (and allowed values / bounds)."""
    lines = []
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        key, tp = f"{prefix}{f.name}", hints[f.name]
        if is_dataclass(tp):
            lines += _explain_section(key, tp)
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        extra = []
        if f.metadata.get("choices"):
            extra.append("one of " + "|".join(map(str, f.metadata["choices"])))
        if f.metadata.get("min") is not None:
            extra.append(f">= {f.metadata['min']}")
        if f.metadata.get("max") is not None:
            extra.append(f"<= {f.metadata['max']}")
        tail = f" [{'; '.join(extra)}]" if extra else ""
        lines.append(f"  {key}: {_type_name(tp)} = {default!r}  {f.metadata.get('help', '')}{tail}")
    return lines


def explain_sections(section: str | None = None) -> list[str]:
    """`explain` over the training config's sections and the commands' (`serve`, `export`, `bench`),
    or over one of them; an unknown `section` is a ConfigError listing the allowed ones."""
    from r1.config_commands import SECTIONS

    every = {**typing.get_type_hints(Config), **SECTIONS}
    if section is not None and section not in every:
        raise ConfigError(f"config explain: unknown section {show(section)}; allowed: {', '.join(every)}")
    lines = []
    for name, cls in every.items():
        if section not in (None, name):
            continue
        if isinstance(cls, type) and issubclass(cls, Variant):
            cls.load_variants()
        if section is None and name == next(iter(SECTIONS)):
            lines.append("# r1 serve / export / bench (--config FILE with these sections)")
        lines += _explain_section(name, cls)
    return lines


def _explain_section(key: str, cls: type) -> list[str]:
    """`[key]`, the section's fields, then each registered variant's own fields."""
    lines = [f"[{key}]"]
    common = explain(cls, key + ".")
    lines += common
    for vname, vcls in sorted(getattr(cls, "_variants", {}).items()):
        own = [line for line in explain(vcls, key + ".") if line not in common]
        if own:
            lines.append(f"  -- when {key}.name={vname}:")
            lines += own
    return lines
