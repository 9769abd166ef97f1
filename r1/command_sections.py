"""Typed sections of `r1 predict`, `eval`, `tune`, `pipeline`, `data inspect|clean|convert`, and the
flags of `r1 train`. Declared with the same `opt()` fields as every other section: each default lives
here, once; the command's flags are generated from these fields (`r1/cli/build.py`), and
`r1 config explain predict` documents them.

Validation that a command's code already does with its own message (`--split`, `--pruner`, `--unit`,
...) stays there, so those messages do not change; the help texts name the allowed values.
"""
from __future__ import annotations

from dataclasses import dataclass

from r1.config.base import opt
from r1.errors import FindingsFound

# Every runtime a model can run in (r1.inference checks against this; a family's spec says which of them
# its models have). Declared here, torch-free, so each command's --runtime help lists them from one place.
RUNTIMES = ("torch", "onnx", "onnx-int8", "tensorrt")
RUNTIME_CHOICES = ("torch: eager PyTorch; onnx: onnxruntime on the run's ONNX export (cached in the run dir); "
                   "onnx-int8: the same with int8 weights (language and image+text models); tensorrt: an engine "
                   "from `r1 export --format tensorrt` (NVIDIA GPU)")


@dataclass
class PredictConfig:
    out: str = opt("", "Directory for annotated PNGs (detection). Empty: nothing drawn.")
    top_k: int = opt(3, "Classes shown per image (classification).", min=1)
    draw_threshold: float = opt(0.3, "Detection, with --out: draw boxes scoring at least this.", min=0.0, max=1.0)
    coco_json: str = opt("", "Detection: also write COCO results here (image ids 1..N). Empty: none.")
    question: str = opt("", "Image+text models: the question asked about each image.")
    runtime: str = opt("", f"Runtime: {RUNTIME_CHOICES}. Empty: from the file (.onnx: onnx, .engine: tensorrt, "
                       "else torch).")
    threads: int = opt(1, "Inference threads.", min=1)
    batch_size: int = opt(16, "Images per batch.", min=1)


@dataclass
class EvalConfig:
    split: str = opt("test", "Split evaluated: val or test.")
    json: str = opt("", "Also write the metrics here (JSON). Empty: only printed.")
    attack: str = opt("", "Classifiers, torch runtime: also report accuracy under an fgsm or pgd attack (L-inf, "
                      "pixel units). Empty: no attack.")
    eps: float = opt(0.1, "With an attack: L-inf budget in [0, 1] pixel units (0.1 = 25/255).")
    steps: int = opt(10, "With attack pgd: steps (step size 2.5 * eps / steps).")
    runtime: str = opt("", f"Runtime: {RUNTIME_CHOICES}. Empty: from the file (.onnx: onnx, .engine: tensorrt, "
                       "else torch).")


@dataclass
class TuneConfig:
    space: str = opt("", "Search space YAML: dotted key -> {type: float|int|categorical, ...}. Required.")
    trials: int = opt(20, "Finished (complete + pruned) trials the study should hold (at least 1).")
    dir: str = opt("", "Study dir. Empty: runs/<run.name>-tune.")
    storage: str = opt("", "Optuna storage URL. Empty: sqlite:///<dir>/tune.db.")
    jobs: int = opt(1, "Trials in parallel processes; each gets cores // jobs threads (at least 1).")
    pruner: str = opt("median", "median, hyperband or none.")
    startup: int = opt(5, "Random trials before TPE, and before the median pruner prunes.")
    seed: int = opt(0, "Sampler seed.")


@dataclass
class PipelineConfig:
    dir: str = opt("", "Pipeline directory: each stage writes DIR/<stage>. Empty: the recipe's dir.")


@dataclass
class TrainFlags:
    """`r1 train`'s own switches. Its settings are the training config's sections (`optim.lr=...`),
    so these are flags only: no `train.*` override (that is the training loop's section)."""
    resume: bool = opt(False, "Continue the run in run.dir from checkpoints/last.pt.")
    progress: bool = opt(True, "Show a progress bar (on a terminal).")


NEAR_BITS = "dHash bits (of 64) near-duplicate images may differ in."
UNIT = "Text documents: auto, paragraph or line."


@dataclass
class InspectConfig:
    out: str = opt("data_report", "Folder for data_report.md/.json and the PNG histograms.")
    strict: bool = opt(False, f"Exit {FindingsFound.exit_code} when anything is found.")
    near_bits: int = opt(4, NEAR_BITS, min=0, max=32)
    unit: str = opt("auto", UNIT)


@dataclass
class CleanConfig:
    out: str = opt("", "New folder for the cleaned copy + clean_report.json. Required.")
    near_bits: int = opt(4, NEAR_BITS, min=0, max=32)
    unit: str = opt("auto", UNIT)
    dedup: str = opt("near", "Text dedupe: none, exact or near.")
    lm: str = opt("", "Text: language-model run that scores each document.")
    max_ppl: float = opt(0.0, "Text: drop documents above this perplexity under lm. 0: no limit.", min=0.0)
    drop_share: float = opt(0.0, "Text: drop this share of the highest-perplexity documents.", min=0.0, max=0.99)


@dataclass
class ConvertConfig:
    out: str = opt("", "New folder for the converted dataset. Required.")
