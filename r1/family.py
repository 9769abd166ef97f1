"""One spec per task family: everything generic code needs to know about a family, in one object.

A family (cls, det, lm, ...) is one folder `r1/models/<family>/` (or any module, e.g. a test's)
that registers its models with `r1.registry.register_model`, its data kinds with
`r1.data.register_data`, and one `FamilySpec` with `register_family`. Generic code (train, export,
serve, pipeline, predict, bench) asks the spec and never names a family.

Hooks may be given as callables or as "module:attribute" strings, imported on first use: a family
can point at heavy code (pycocotools, onnx) without importing it when the family registers.

    register_family(FamilySpec(
        name="shapes", summary="which shape is in the image",
        evaluate="my_pkg.metrics:shape_accuracy", monitor="accuracy", mode="max",   # imported on first use
        io=FamilyIO(resize_normalize, shape_records),               # image in, records out
        export=ExportHook(output_names=lambda options: ["logits"]),   # ONNX export
        kd=shape_kd, prune="r1.compress.prune:prune_l1"))

See `r1/models/cls/family.py` for a complete one, and tests/test_family_toy.py for a family
registered from outside r1/.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

from r1.errors import ConfigError, Unavailable
from r1.input_kinds import get_input_kind, input_kind_names


@dataclass
class FamilyIO:
    """Prediction I/O of an image family: PIL images -> model input; model output -> JSON-safe records."""

    preprocess: Callable  # (list[PIL.Image], meta) -> float tensor (B, C, H, W)
    postprocess: Callable  # (model outputs, meta, options) -> list[dict]; options: top_k, images, ...
    draw: Callable | None = None  # (PIL image, record, meta, path, **options) -> None: a picture of a record


@dataclass
class ExportHook:
    """How a family is exported to ONNX (`r1.onnx.export.export_onnx`). Defaults fit a model whose
    eval forward takes one image batch and returns one tensor."""

    output_names: Callable = lambda options: ["output"]  # options -> graph output names
    wrap: Callable = lambda model, options: model  # (model, options) -> the module to trace
    extra_meta: Callable = lambda model, options, example: {}  # -> extra metadata_props (str -> str)
    # (graph outputs as numpy arrays, full onnx metadata) -> what the family's postprocess takes
    decode: Callable = lambda outputs, onnx_meta: outputs[0]
    options: dict = field(default_factory=dict)  # accepted option names -> defaults
    # options -> torch.onnx custom_translation_table (custom ops in the wrapped module)
    translations: Callable = lambda options: {}
    # (options, torch outputs, onnxruntime outputs) -> max abs difference (inf: no match)
    compare: Callable | None = None
    # the family writes the graph itself (several inputs, e.g. a KV cache): (model, out, opset=, verify=,
    # atol=, options=, meta=, metadata=) -> report; `metadata(model, meta, example)` -> the R1 metadata_props
    run: Callable | None = None
    # model -> the stride its H and W must be multiples of, for `--dynamic-hw` (r1/onnx/dynamic_hw.py;
    # the wrapped module then gets options["dynamic_hw"] = True); ConfigError if this model cannot.
    # None: the family has no dynamic-HW export
    stride: Callable | None = None


@dataclass
class FamilySpec:
    name: str
    summary: str
    evaluate: Any  # (model, loader, meta, device, out_dir) -> {metric: value} (keys without split prefix)
    monitor: str  # the metric that picks the best checkpoint by default
    mode: str  # "max" or "min": which monitor values are better
    inputs: str = "image"  # its input kind (r1.input_kinds): "image", "text", "image+text" or a registered one
    io: Any = None  # FamilyIO, for image families
    predictor: Any = None  # `load(path, runtime, threads)` -> the family's own Predictor (same protocol)
    export: Any = None  # ExportHook; None: the family has no ONNX export
    runtimes: tuple[str, ...] = ("torch", "onnx", "tensorrt")  # runtimes its Predictor can use
    kd: Any = None  # (student, teacher, inputs, targets) -> (task losses, student logits, teacher logits, mask)
    #                 [features=True: + (student, teacher) LayerFeatures lists; r1.compress.distill]
    prune: Any = None  # (model, fraction, reference) -> pruned model (its config rebuilds it)
    example_inputs: Any = None  # (meta, n, torch.Generator) -> a batch of n model inputs (bench, report)
    # (predictor, batch_sizes, runs) -> one row per batch size {runtime, p50, p95, mean, min, runs, batch,
    # throughput, unit, note}: the family's own speed measure (e.g. seconds per generation step) for
    # `r1 bench` and the pipeline report. None: the latency of one call on `example_inputs`-shaped input
    bench: Any = None
    primary_loss: str | None = None  # the loss part that heads training log lines (else the total)
    schema: Any = None  # the pydantic model of one prediction record (documents /v1/predict's `result`)
    depends: tuple[str, ...] = ()  # families whose public names this one imports (e.g. a backbone, a tokenizer)
    writers: dict[str, Any] = field(default_factory=dict)  # extra result formats, e.g. {"coco": fn(info, records, path)}
    tolerance: float = 0.01  # monitor drop a deployable variant may have (the pipeline report's verdict)
    headline: tuple[str, ...] = ()  # metrics a run's log lines show per split (); (): the monitor. Every
    #                                 metric is in metrics.json and metrics.md

    def __post_init__(self):
        if self.mode not in ("max", "min"):
            raise ValueError(f"family {self.name}: mode must be 'max' or 'min', got {self.mode!r}")
        if self.inputs not in input_kind_names():
            raise ValueError(f"family {self.name}: inputs must be one of {input_kind_names()}, got {self.inputs!r}")
        for need in get_input_kind(self.inputs).needs:
            if getattr(self, need) is None:
                raise ValueError(f"family {self.name}: an {self.inputs} family needs `{need}`")

    def hook(self, name: str, what: str = ""):
        """The hook `name`, imported if given as "module:attribute"; Unavailable when the family has none."""
        value = getattr(self, name)
        if value is None:
            raise Unavailable(f"{what or name}: not available for family {self.name!r}; "
                              f"families that have it: {', '.join(families_with(name)) or 'none'}")
        if isinstance(value, str):
            module, _, attr = value.partition(":")
            value = getattr(importlib.import_module(module), attr)
            setattr(self, name, value)
        return value

    def writer(self, name: str) -> Callable:
        if name not in self.writers:
            having = [n for n, s in _FAMILIES.items() if name in s.writers]
            raise ConfigError(f"{name} results: family {self.name!r} does not write them; "
                              f"families that do: {', '.join(having) or 'none'}")
        fn = self.writers[name]
        if isinstance(fn, str):
            module, _, attr = fn.partition(":")
            fn = self.writers[name] = getattr(importlib.import_module(module), attr)
        return fn


_FAMILIES: dict[str, FamilySpec] = {}


def register_family(spec: FamilySpec) -> FamilySpec:
    if spec.name in _FAMILIES and _FAMILIES[spec.name] is not spec:
        raise ValueError(f"family {spec.name} registered twice")
    _FAMILIES[spec.name] = spec
    return spec


def unregister_family(name: str) -> None:
    """For tests that register a family of their own."""
    _FAMILIES.pop(name, None)


def _ensure_loaded() -> None:
    import r1.models
    r1.models.load_all()  # each family registers its spec


def get_family(name: str) -> FamilySpec:
    if name not in _FAMILIES:
        _ensure_loaded()
    if name not in _FAMILIES:
        raise ConfigError(f"unknown model family {name!r}; known: {', '.join(sorted(_FAMILIES))}")
    return _FAMILIES[name]


def list_families() -> list[str]:
    _ensure_loaded()
    return sorted(_FAMILIES)


def families_with(hook: str) -> list[str]:
    return sorted(n for n, s in _FAMILIES.items() if getattr(s, hook) is not None)
