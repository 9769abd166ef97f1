"""The training config's sections: one dataclass per section, every field documented where it is declared.

`Config` gathers them; `model` and `data` are variant sections (see `r1.config.base.variant`): each model
or dataset subclasses `ModelConfig` / `DataConfig` with the fields it understands.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from r1.config.base import Variant, opt, show, variant_base
from r1.errors import ConfigError


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
    def check_variant(cls, name: str, flavors: dict[str, dict] | None) -> None:
        if flavors is None or "tiny" not in flavors or "small" not in flavors:
            raise ValueError(f"model {name}: flavors must include 'tiny' and 'small'")

    @classmethod
    def presets(cls, data: dict) -> dict:
        return cls.flavor_preset(data.get("name", cls.name), data.get("flavor", cls.flavor))

    @classmethod
    def flavor_preset(cls, name: str, flavor: str) -> dict:
        """Field values of `flavor` for model `name` (its flavor table, declared with `variant`), with the
        flavor itself."""
        if cls.find_variant(name) is None:
            raise ConfigError(f"model.name: unknown model {name!r}; allowed: {', '.join(sorted(cls._variants))}")
        flavors = cls._flavors[name]
        if flavor not in flavors:
            raise ConfigError(f"model.flavor: unknown flavor {show(flavor)} for {name}; "
                              f"allowed: {', '.join(flavors)}")
        return {"flavor": flavor, **flavors[flavor]}


@variant_base
@dataclass
class DataConfig(Variant):
    name: str = opt("digits", "Dataset kind.")
    batch_size: int = opt(64, "Global training batch (split across processes under torchrun).", min=1)
    eval_batch_size: int = opt(256, "Batch size for evaluation.", min=1)
    num_workers: int = opt(0, "DataLoader worker processes (0: load in the training process).", min=0)


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
