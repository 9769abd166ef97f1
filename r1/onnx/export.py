"""ONNX export with a dynamic batch dimension, R1 metadata, and an onnxruntime parity check.

Each family plugs in through the `ExportHook` of its spec (`r1.family`): which module to trace (e.g. a detector's raw head
outputs instead of its Python post-processing), the names of the graph outputs, extra metadata,
and how to turn the graph outputs back into what the family's `FamilyIO.postprocess` expects.

Metadata written to `ModelProto.metadata_props` (all values are strings, JSON where structured):
    r1.format      "r1-onnx/1"
    r1.family      the family name (cls, det, ...)
    r1.model       the model config (JSON), enough to rebuild the torch model
    r1.meta        the data meta (JSON): classes, preprocess, ...
    r1.data        the data config (JSON), so evaluation can rebuild the dataset
    r1.classes     class names (JSON list), duplicated for non-R1 consumers
    r1.preprocess  {"size": [H, W], "mean": [...], "std": [...]} (JSON)
    r1.input       {"name": "images", "layout": "NCHW", "dtype": "float32", "shape": [-1, 3, H, W]}
                   (H, W -1 with --dynamic-hw)
    r1.dynamic_hw  with --dynamic-hw only: {"stride", "min", "opt", "max"} (JSON; r1/onnx/dynamic_hw.py)
    r1.export      the export settings (JSON: dynamic_batch, opset, the hook's options, dynamic_hw): with
    r1.source_sha256  the sha256 of the weights file exported (when exported from a run dir or .safetensors),
                   they let `r1 bench` / `r1.load(runtime="onnx")` reuse the model.onnx `r1 export` wrote, and
                   `r1 export` reuse the run's cached export, instead of exporting the same weights twice
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn

from r1.errors import ConfigError, R1Error
from r1.family import ExportHook
from r1.onnx.compact import compact_onnx
from r1.onnx.dynamic_hw import META_KEY as DYNAMIC_HW_KEY
from r1.onnx.dynamic_hw import dynamic_meta, export_dims, resolve_range, verify_size
from r1.onnx.graph import FORMAT, INPUT_NAME, max_abs_diff, ort_session, quiet_tools

log = logging.getLogger(__name__)


def get_export_hook(family: str) -> ExportHook:
    from r1.family import get_family
    return get_family(family).hook("export", "ONNX export")


# ---------------------------------------------------------------------------- export
def example_input(family: str, meta: dict, batch: int, seed: int = 0) -> torch.Tensor:
    """A batch of the family's example inputs (e.g. normalised-looking random images)."""
    from r1.family import get_family

    make = get_family(family).hook("example_inputs", "example inputs")
    return make(meta, batch, torch.Generator().manual_seed(seed))


def export_onnx(model: nn.Module | str | Path, out: str | Path, *, dynamic_batch: bool = True,
                opset: int | None = None, verify: bool = True, trace_batch: int = 2, verify_batch: int = 3,
                atol: float = 1e-4, options: dict | None = None, meta: dict | None = None,
                family: str | None = None, dynamic_hw: dict | None = None) -> dict:
    """Export a model (or a run dir / .safetensors) to `out`; returns a report dict.

    The graph is traced at batch `trace_batch` (>= 2: the dynamo exporter specialises a batch
    of 1) and, when `verify`, checked with onnxruntime at batch `verify_batch` against torch.
    `dynamic_hw` ({"min_size", "opt_size", "max_size"}, 0 = default; families whose export hook
    has a `stride`): dynamic height and width too (`r1.onnx.dynamic_hw`), traced at opt x opt and
    also checked at a non-square size.
    """
    source_sha = ""
    if isinstance(model, (str, Path)):
        from r1.artifacts import load_model, resolve_weights, sha256_file
        source_sha = sha256_file(resolve_weights(model))
        model = load_model(model)
    meta = meta if meta is not None else getattr(model, "r1_meta", None)
    family = family or getattr(model, "r1_family", None)
    if meta is None or family is None:
        raise ConfigError("export needs the model's meta and family (load it with r1.load_model)")
    hook = get_export_hook(family)
    options = {**hook.options, **(options or {})}
    unknown = set(options) - set(hook.options)
    if unknown:
        raise ConfigError(f"export option(s) {sorted(unknown)} not allowed for family {family!r}; "
                          f"allowed: {sorted(hook.options) or 'none'}")
    rng = None
    if dynamic_hw is not None:
        rng = _size_range(hook, model, meta, family, dynamic_hw)
        meta, options = dynamic_meta(meta, rng), {**options, "dynamic_hw": True}
    stamp = {"r1.export": export_key(dynamic_batch, opset, options, rng.to_json() if rng is not None else None)}
    if source_sha:
        stamp["r1.source_sha256"] = source_sha
    if hook.run is not None:
        with quiet_tools():
            return hook.run(model, out, opset=opset, verify=verify, atol=atol, options=options, meta=meta,
                            metadata=lambda m, mt, ex: {**_metadata(m, mt, family, dynamic_batch, ex), **stamp})
    if trace_batch < 2 and dynamic_batch:
        raise ConfigError("trace_batch must be >= 2 for a dynamic batch dimension")
    net = hook.wrap(model.eval(), options).eval()
    trace_meta = meta if rng is None else _sized(meta, rng.opt, rng.opt)
    example = example_input(family, trace_meta, trace_batch)
    names = hook.output_names(options)
    dims = {0: torch.export.Dim("batch", min=1, max=4096)} if dynamic_batch else {}
    dims.update(export_dims(rng) if rng is not None else {})
    dyn = {INPUT_NAME: dims} if dims else None
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with torch.no_grad(), quiet_tools():
        torch.onnx.export(net, (example,), str(out), input_names=[INPUT_NAME], output_names=names,
                          dynamic_shapes=dyn, opset_version=opset, external_data=False, verbose=False,
                          custom_translation_table=hook.translations(options) or None)
    seconds = time.perf_counter() - t0
    props = _metadata(model, meta, family, dynamic_batch, example, dynamic_hw=rng is not None)
    props.update(hook.extra_meta(model, options, example), **stamp)
    if rng is not None:
        props[DYNAMIC_HW_KEY] = rng.to_json()
    compact_onnx(out, props)
    report = {"path": str(out), "family": family, "export_seconds": round(seconds, 2),
              "dynamic_batch": dynamic_batch, "trace_batch": trace_batch, "outputs": names}
    if rng is not None:
        report["dynamic_hw"] = json.loads(rng.to_json())
    if verify:
        vb = verify_batch if dynamic_batch else trace_batch
        compare = None if hook.compare is None else (lambda ref, got: hook.compare(options, ref, got))
        report.update(verify_onnx(net, out, example_input(family, trace_meta, vb, seed=1), atol=atol, compare=compare))
        if rng is not None:  # and at a non-square size other than the trace's
            h, w = verify_size(rng)
            other = verify_onnx(net, out, example_input(family, _sized(meta, h, w), vb, seed=2), atol=atol,
                                compare=compare)
            report.update(verify_hw=[h, w], max_abs_diff=max(report["max_abs_diff"], other["max_abs_diff"]))
    return report


def export_key(dynamic_batch: bool = True, opset: int | None = None, options: dict | None = None,
               dynamic_hw: str | None = None) -> str:
    """The `r1.export` stamp: the settings that shape the graph (`options` with the hook's defaults)."""
    return json.dumps({"dynamic_batch": dynamic_batch, "opset": opset, "options": options or {},
                       "dynamic_hw": dynamic_hw}, sort_keys=True)


def default_export_key(family: str) -> str:
    """The stamp of an export with every default: what `r1.load(run, runtime="onnx")` makes."""
    return export_key(options=dict(get_export_hook(family).options))


def same_export(path: Path, source_sha: str) -> bool:
    """Whether the .onnx at `path` was exported from weights with this sha256 with the default settings
    (its `r1.source_sha256` and `r1.export` stamps); False for any file without them."""
    from r1.onnx.graph import read_onnx_meta

    try:
        props = read_onnx_meta(path)
    except R1Error:
        return False
    return (props.get("r1.source_sha256") == source_sha
            and props.get("r1.export") == default_export_key(props.get("r1.family", "")))


def _size_range(hook: ExportHook, model: nn.Module, meta: dict, family: str, request: dict):
    if hook.stride is None:
        from r1.family import families_with
        raise ConfigError(f"--dynamic-hw: not available for family {family!r}; families that have it: "
                          f"{', '.join(f for f in families_with('export') if _has_stride(f)) or 'none'}")
    size = max(meta.get("preprocess", {}).get("size", [0]))
    return resolve_range(hook.stride(model), int(size), int(request.get("min_size") or 0),
                         int(request.get("opt_size") or 0), int(request.get("max_size") or 0))


def _has_stride(family: str) -> bool:
    try:
        return get_export_hook(family).stride is not None
    except Exception:  # a family whose hook cannot be imported here
        return False


def _sized(meta: dict, h: int, w: int) -> dict:
    """The meta with its preprocess size set to (h, w): example inputs of that size."""
    return {**meta, "preprocess": {**meta.get("preprocess", {}), "size": [h, w]}}


def _metadata(model: nn.Module, meta: dict, family: str, dynamic_batch: bool, example: torch.Tensor,
              dynamic_hw: bool = False) -> dict:
    from r1.config import to_dict

    cfg = getattr(model, "r1_config", None)
    shape = [-1 if dynamic_batch else example.shape[0], *example.shape[1:]]
    if dynamic_hw:
        shape[-2:] = [-1, -1]
    return {"r1.format": FORMAT, "r1.family": family,
            "r1.model": json.dumps(to_dict(cfg) if cfg is not None else {}),
            "r1.meta": json.dumps(meta), "r1.data": json.dumps(getattr(model, "r1_data", None) or {}),
            "r1.classes": json.dumps(meta.get("classes", [])),
            "r1.preprocess": json.dumps(meta.get("preprocess", {})),
            "r1.input": json.dumps({"name": INPUT_NAME, "layout": "NCHW", "dtype": "float32", "shape": shape})}


@torch.no_grad()
def verify_onnx(net: nn.Module, path: str | Path, x: torch.Tensor, atol: float = 1e-4,
                compare: Callable[[list[np.ndarray], list[np.ndarray]], float] | None = None) -> dict:
    """Run torch and onnxruntime on `x`; raise if `compare(torch outputs, onnxruntime outputs)`
    (default: the max abs difference of every output) exceeds `atol`."""
    ref = net(x)
    ref = [t.numpy() for t in ([ref] if isinstance(ref, torch.Tensor) else ref)]
    got = ort_session(path).run(None, {INPUT_NAME: x.numpy()})
    diff = (compare or max_abs_diff)(ref, got)
    if not diff <= atol:
        raise R1Error(f"{path}: onnxruntime differs from torch at batch {x.shape[0]} "
                          f"(max abs diff {diff:.3g} > {atol:g})")
    return {"verify_batch": int(x.shape[0]), "max_abs_diff": diff}
