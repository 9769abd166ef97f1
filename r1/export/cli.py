"""What `r1 export` runs: ONNX export, then optionally a TensorRT engine or a Triton model repository; or an
ExecuTorch program (r1/export/executorch.py)."""
from __future__ import annotations

import os
from pathlib import Path

from r1.errors import ConfigError
from r1.outputs import check_file, check_folder, check_location, output_file, output_folder, record_file

SUFFIXES = {"onnx": (".onnx",), "tensorrt": (".engine", ".plan"), "executorch": (".pte",)}
SOURCE_FILES = ("model.safetensors", "model.json", "config.yaml", "metrics.json", "checkpoints")


def default_out(model: Path, suffix: str) -> Path:
    base = model if model.is_dir() else model.parent
    return base / f"model{suffix}"


def check_out(model: Path, out: Path, fmt: str, *also: Path) -> None:
    """The export target must carry the format's suffix, must not be a file of the source artifact
    (its weights, model.json, a checkpoint: overwriting those loses the model), and must pass the
    output-file rules (r1/outputs.py: no system folder, no file R1 did not write), as must `also`
    (files written beside it)."""
    check_location(out, "--out")  # first: `/` is the root before it lacks a suffix
    if out.suffix not in SUFFIXES[fmt]:
        raise ConfigError(f"--out: {out} must end with {' or '.join(SUFFIXES[fmt])} for --format {fmt}")
    base = model if model.is_dir() else model.parent
    sources = ([] if model.is_dir() else [model]) + [base / name for name in SOURCE_FILES]
    for src in sources:
        if src.exists() and out.exists() and out.samefile(src) or _inside(out, src):
            raise ConfigError(f"--out: {out} would overwrite the source model's {src.name}; choose another path")
    for path in (out, *also):
        check_file(path, "--out")


def _inside(path: Path, folder: Path) -> bool:
    return folder.is_dir() and os.path.realpath(path).startswith(os.path.realpath(folder) + os.sep)


def run_export(model: Path, fmt: str, dynamic_batch: bool = True, opset: int | None = None,
               out: Path | None = None, nms: bool = False, fp16: bool = False, int8: bool = False,
               max_batch: int = 32, triton=None, hw: dict | None = None) -> dict:
    """`triton`: `r1.export.triton.TritonSettings` for fmt="triton" (None: defaults, max_batch_size=max_batch).
    `hw`: {"min_size", "opt_size", "max_size"} for a dynamic-HW export (`r1.onnx.dynamic_hw`), whose
    range also becomes the TensorRT profile's H and W."""
    from r1.onnx.export import export_onnx

    if fmt not in ("onnx", "tensorrt", "triton", "executorch"):
        raise ConfigError(f"--format: {fmt!r} is not allowed; allowed: onnx, tensorrt, triton, executorch")
    if fmt == "executorch":
        return _export_executorch(model, out, nms=nms, int8=int8, hw=hw)
    options = {"nms": True} if nms else {}
    if int8 and fmt == "onnx":  # families whose export hook has an int8 option (e.g. lm: dynamic int8)
        options["int8"] = True
    if fmt == "triton":
        if hw is not None:
            raise ConfigError("--dynamic-hw: not available for --format triton; allowed: onnx, tensorrt")
        return _export_triton(model, out, opset, options, triton, max_batch)
    if fmt == "onnx":
        if model.suffix == ".onnx":
            raise ConfigError(f"{model}: already ONNX; export takes a run dir or .safetensors")
        default = out is None
        out = out or default_out(model, ".onnx")
        check_out(model, out, fmt)
        report = None
        if default and dynamic_batch and opset is None and not options and hw is None:
            report = _cached_export(model, out)
        if report is None:
            report = export_onnx(model, out, dynamic_batch=dynamic_batch, opset=opset, options=options, dynamic_hw=hw)
        record_file(out)
        return report

    from r1.export.tensorrt import build_engine
    from r1.inference.tensorrt import require_tensorrt

    out = out or (model.with_suffix(".engine") if model.suffix == ".onnx" else default_out(model, ".engine"))
    check_location(out, "--out")
    check_out(model, out, fmt, *([] if model.suffix == ".onnx" else [out.with_suffix(".onnx")]))
    require_tensorrt()  # fail before a slow ONNX export on machines without a GPU
    if model.suffix == ".onnx":
        if hw is not None:
            raise ConfigError(f"--dynamic-hw: {model} is already exported; its range is fixed in it "
                              f"(give the run dir to re-export it)")
        onnx_path = model
    else:
        onnx_path = out.with_suffix(".onnx")
        export_onnx(model, onnx_path, dynamic_batch=True, opset=opset, options=options, dynamic_hw=hw)
        record_file(onnx_path)
    calibration = _calibration_batches(model) if int8 else None
    output_file(out, "--out")  # its folder, now that there is something to write
    report = build_engine(onnx_path, out, fp16=fp16, int8=int8, calibration=calibration, min_batch=1,
                          opt_batch=max(1, max_batch // 4), max_batch=max_batch)
    record_file(out)
    return report


def _cached_export(model: Path, out: Path) -> dict | None:
    """The run's cached export of these weights (`onnx/model-<hash>.onnx`, made by `r1 bench`, `--runtime
    onnx` or a pipeline report, with these same default settings), linked or copied to `out` instead of
    exporting again; None when there is none."""
    import logging

    from r1.artifacts import resolve_weights, sha256_file
    from r1.inference.runtimes import link_or_copy
    from r1.onnx.graph import read_onnx_meta

    weights = resolve_weights(model)
    cached = weights.parent / "onnx" / f"model-{sha256_file(weights)[:16]}.onnx"
    if not cached.is_file() or link_or_copy(cached, out) is None:
        return None
    logging.getLogger(__name__).info("export: %s is the run's cached export of these weights (%s): linked, "
                                     "not exported again", out, cached)
    return {"path": str(out), "family": read_onnx_meta(out)["r1.family"], "reused": str(cached)}


def _export_triton(model: Path, out: Path | None, opset: int | None, options: dict, settings, max_batch: int) -> dict:
    import tempfile

    from r1.config_commands import auto_preferred
    from r1.export.triton import TritonSettings, write_repository
    from r1.onnx.export import export_onnx

    if settings is None:
        settings = TritonSettings(max_batch_size=max_batch, preferred_batch_sizes=tuple(auto_preferred(max_batch)))
    settings.validate()
    repo = check_folder(out or default_out(model, "").with_name("triton"), "--out", "triton")
    if model.suffix == ".onnx":  # an existing export: checked and copied as it is
        return write_repository(model, output_folder(repo, "--out", "triton"), settings, source=model)
    with tempfile.TemporaryDirectory() as tmp:
        report = export_onnx(model, Path(tmp) / "model.onnx", dynamic_batch=True, opset=opset, options=options)
        report.update(write_repository(Path(tmp) / "model.onnx", output_folder(repo, "--out", "triton"), settings,
                                       source=model))
    report["path"] = report["onnx"]
    return report


def _export_executorch(model: Path, out: Path | None, nms: bool, int8: bool, hw: dict | None) -> dict:
    from r1.export.executorch import SUFFIX, export_executorch, require_executorch

    for flag, on in (("--nms", nms), ("--int8", int8), ("--dynamic-hw", hw is not None)):
        if on:
            raise ConfigError(f"{flag}: not available for --format executorch (fp32, batch 1, fixed size); "
                              f"allowed with: onnx, tensorrt")
    if model.suffix == ".onnx":
        raise ConfigError(f"{model}: --format executorch exports from the run dir or .safetensors, not an .onnx")
    out = out or default_out(model, SUFFIX)
    check_location(out, "--out")
    check_out(model, out, "executorch", out.with_name(out.name + ".json"))
    require_executorch()  # before loading the model
    report = export_executorch(model, out)
    record_file(out, out.with_name(out.name + ".json"))
    return report


def _calibration_batches(model: Path, batches: int = 16):
    """Preprocessed val batches of the model's own data (from model.json) for INT8 calibration."""
    import numpy as np
    from torch.utils.data import DataLoader

    from r1.artifacts import read_info
    from r1.config import DataConfig, from_dict
    from r1.data import build_data

    if model.suffix == ".onnx":
        raise ConfigError("--int8 needs the run dir (its data calibrates the engine), not an .onnx")
    info = read_info(model)
    cfg = from_dict(DataConfig, info.get("data") or {}, "data")
    bundle = build_data(cfg, seed=0)
    loader = DataLoader(bundle.val or bundle.train, batch_size=cfg.eval_batch_size, collate_fn=bundle.collate)
    for i, (x, _) in enumerate(loader):
        if i >= batches:
            break
        yield np.ascontiguousarray(x.numpy(), np.float32)
