"""`r1 export RUN --format executorch`: a mobile program (.pte) for the XNNPACK delegate.

The graph is the family's ONNX export graph (its export hook's `wrap`: raw outputs, decoding left to
the caller exactly as for ONNX), captured by `torch.export` at batch 1, lowered with
`to_edge_transform_and_lower(..., XnnpackPartitioner())` and written as an ExecuTorch program.
Beside it, `<out>.json` carries what the ONNX file keeps in its metadata (family, meta, output
names, the family's extra keys) so that an app can pre-process and decode. The export then loads
the program in the ExecuTorch runtime, checks it against torch on another input (max abs diff on the
raw outputs) and times both at batch 1 (medians).

Needs the `executorch` package (the `mobile` extra; `make install` installs it --no-deps, see the
Makefile). Families with their own export graph (a `run` hook: language and multimodal models) are
refused with the reason.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch

from r1.errors import ConfigError

SUFFIX = ".pte"
log = logging.getLogger(__name__)


def require_executorch() -> None:
    try:
        import executorch  # noqa: F401
        from executorch.exir import to_edge_transform_and_lower  # noqa: F401
    except ImportError as err:
        raise ConfigError(f"--format executorch needs the executorch package ({err}); "
                          f"install it with: pip install --no-deps 'executorch==1.5.1' ruamel.yaml") from None


def _lower(net: torch.nn.Module, example: torch.Tensor) -> bytes:
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    with torch.no_grad():
        program = torch.export.export(net, (example,))
    return to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()]).to_executorch().buffer


def _median_ms(fn, reps: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return round(1000 * sorted(times)[len(times) // 2], 4)


def export_executorch(model, out: str | Path, *, verify: bool = True, reps: int = 30) -> dict:
    """Export a model (or a run dir / .safetensors) to an ExecuTorch program `out` (batch 1, fp32,
    XNNPACK); returns a report: path, sidecar, bytes, export seconds and, when `verify`, the max abs
    difference to torch and batch-1 median latencies (ms) of the program and of torch eager."""
    from r1.onnx.export import _metadata, example_input, get_export_hook

    require_executorch()
    if isinstance(model, (str, Path)):
        from r1.artifacts import load_model
        model = load_model(model)
    meta, family = getattr(model, "r1_meta", None), getattr(model, "r1_family", None)
    if meta is None or family is None:
        raise ConfigError("export needs the model's meta and family (load it with r1.load_model)")
    hook = get_export_hook(family)
    if hook.run is not None:
        raise ConfigError(f"--format executorch: family {family!r} has its own export graph (KV cache / two inputs); "
                          f"allowed: image-in families such as cls and det")
    options = dict(hook.options)
    net = hook.wrap(model.eval(), options).eval()
    example = example_input(family, meta, 1)
    log.info("executorch: exporting %s for XNNPACK (torch.export + lowering: 10-60 s on one CPU thread)", family)
    t0 = time.perf_counter()
    program = _lower(net, example)
    seconds = time.perf_counter() - t0
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(program)
    props = _metadata(model, meta, family, False, example)
    props.update(hook.extra_meta(model, options, example))
    props["r1.outputs"] = json.dumps(hook.output_names(options))
    sidecar = out.with_name(out.name + ".json")
    sidecar.write_text(json.dumps(props, indent=1))
    report = {"path": str(out), "format": "executorch", "delegate": "xnnpack", "family": family, "batch": 1,
              "bytes": len(program), "sidecar": str(sidecar), "export_seconds": round(seconds, 2)}
    if verify:
        log.info("executorch: %s written (%.1f MB in %.0f s); checking it against torch", out, len(program) / 1e6, seconds)
        report.update(verify_program(out, net, example_input(family, meta, 1, seed=1), reps))
    return report


def verify_program(path: Path, net: torch.nn.Module, x: torch.Tensor, reps: int = 30) -> dict:
    """Run the program in the ExecuTorch runtime on `x`: max abs diff to `net`'s raw outputs and the
    batch-1 median latency of both (same thread count as torch's)."""
    from executorch.runtime import Runtime

    method = Runtime.get().load_program(str(path)).load_method("forward")
    got = method.execute([x])
    with torch.no_grad():
        ref = net(x)
        ref = list(ref) if isinstance(ref, (tuple, list)) else [ref]
        diff = max(float((a - b).abs().max()) for a, b in zip(ref, got))
        torch_ms = _median_ms(lambda: net(x), reps)
    return {"max_abs_diff": diff, "latency_ms_b1": _median_ms(lambda: method.execute([x]), reps),
            "torch_latency_ms_b1": torch_ms}
