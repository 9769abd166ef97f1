"""TensorRT engines built from R1's ONNX files (the runner is `r1.inference.tensorrt`).

Needs an NVIDIA GPU, CUDA-enabled torch and the `tensorrt` Python package (TensorRT >= 8.6 API:
named I/O tensors, `execute_async_v3`). Everywhere else every entry point raises
`r1.errors.Unavailable` (exit code 5) saying what is missing. Device buffers are torch CUDA
tensors, so no pycuda is needed.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Iterable

import numpy as np

from r1.errors import ConfigError
from r1.inference.tensorrt import require_tensorrt

log = logging.getLogger(__name__)


def profile_shapes(props: dict, min_batch: int, opt_batch: int, max_batch: int):
    """The optimisation profile (min, opt, max input shapes) of an R1 ONNX file's metadata: the batch
    range given, and for a dynamic-HW export (`r1.dynamic_hw`) its --min/--opt/--max-size as H and W."""
    from r1.onnx.dynamic_hw import read_range

    if not 1 <= min_batch <= opt_batch <= max_batch:
        raise ConfigError(f"TensorRT profile needs 1 <= min ({min_batch}) <= opt ({opt_batch}) <= max ({max_batch})")
    shape = json.loads(props["r1.input"])["shape"]
    rng = read_range(props)
    if rng is None:
        if any(d < 1 for d in shape[1:]):
            raise ConfigError(f"TensorRT profile: the ONNX input {shape} has dynamic dims beyond the batch "
                              f"but no r1.dynamic_hw range; re-export it with `r1 export --dynamic-hw`")
        rest = tuple(shape[1:])
        return (min_batch, *rest), (opt_batch, *rest), (max_batch, *rest)
    lead = tuple(shape[1:-2])
    return tuple((b, *lead, *hw) for b, hw in zip((min_batch, opt_batch, max_batch), rng.profile()))


class _Calibrator:
    """INT8 entropy calibrator over batches of preprocessed images (B, 3, H, W) float32."""

    def __new__(cls, trt, batches: Iterable[np.ndarray], cache: Path):
        import torch

        class Calibrator(trt.IInt8EntropyCalibrator2):
            def __init__(self):
                super().__init__()
                self.batches, self.cache, self.device = iter(batches), cache, None

            def get_batch_size(self):
                return 1 if self.device is None else int(self.device.shape[0])

            def get_batch(self, names):
                batch = next(self.batches, None)
                if batch is None:
                    return None
                self.device = torch.from_numpy(np.ascontiguousarray(batch, np.float32)).cuda()
                return [int(self.device.data_ptr())]

            def read_calibration_cache(self):
                return self.cache.read_bytes() if self.cache.is_file() else None

            def write_calibration_cache(self, data):
                self.cache.write_bytes(bytes(data))

        return Calibrator()


def build_engine(onnx_path: str | Path, out: str | Path | None = None, *, fp16: bool = False,
                 int8: bool = False, calibration: Iterable[np.ndarray] | None = None, min_batch: int = 1,
                 opt_batch: int = 8, max_batch: int = 32, workspace_gb: float = 2.0) -> dict:
    """Build a serialized engine (`.engine` beside the ONNX file by default) with one optimization
    profile over the batch dimension (and H, W for a dynamic-HW export: `profile_shapes`); R1's ONNX
    metadata is stored in a `.json` next to it."""
    from r1.onnx.graph import INPUT_NAME, read_onnx_meta

    trt = require_tensorrt()
    onnx_path = Path(onnx_path)
    props = read_onnx_meta(onnx_path)
    out = Path(out) if out else onnx_path.with_suffix(".engine")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):  # implicit in TensorRT >= 10
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ConfigError(f"{onnx_path}: TensorRT cannot parse it: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    shapes = profile_shapes(props, min_batch, opt_batch, max_batch)
    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT_NAME, *shapes)
    config.add_optimization_profile(profile)
    if fp16:
        if not builder.platform_has_fast_fp16:
            log.warning("this GPU has no fast FP16; building anyway")
        config.set_flag(trt.BuilderFlag.FP16)
    if int8:
        if calibration is None:
            raise ConfigError("INT8 needs calibration batches (preprocessed images)")
        config.set_flag(trt.BuilderFlag.INT8)
        config.set_calibration_profile(profile)
        config.int8_calibrator = _Calibrator(trt, calibration, out.with_suffix(".calib"))
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ConfigError(f"{onnx_path}: TensorRT failed to build an engine (see its log above)")
    out.write_bytes(bytes(serialized))
    out.with_suffix(".json").write_text(json.dumps(props))
    return {"path": str(out), "fp16": fp16, "int8": int8, "profile": [list(s) for s in shapes]}
