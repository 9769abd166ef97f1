"""Running TensorRT engines built by `r1 export --format tensorrt` (`r1.export.tensorrt`).

Needs an NVIDIA GPU, CUDA-enabled torch and the `tensorrt` Python package; everywhere else
`require_tensorrt` raises `r1.errors.Unavailable` (exit code 5) saying what is missing.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from r1.errors import ConfigError, Unavailable


def require_tensorrt():
    """Return the `tensorrt` module, or raise Unavailable with the reason."""
    import torch

    if not torch.cuda.is_available():
        raise Unavailable("TensorRT needs an NVIDIA GPU with CUDA; none is available on this machine "
                          "(use --format onnx / --runtime onnx)")
    try:
        import tensorrt as trt
    except ImportError:
        raise Unavailable("TensorRT is not installed: `pip install tensorrt` on a machine with an NVIDIA GPU") from None
    return trt


class TensorRTRunner:
    """`runner(batch (B, 3, H, W) float32) -> list of output arrays`, B within the engine's profile."""

    def __init__(self, engine_path: str | Path):
        import torch

        trt = require_tensorrt()
        engine_path = Path(engine_path)
        if not engine_path.is_file():
            raise ConfigError(f"model not found: {engine_path}")
        self.props = json.loads(engine_path.with_suffix(".json").read_text())
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if self.engine is None:
            raise ConfigError(f"{engine_path}: not a TensorRT engine for this TensorRT version / GPU")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        self.max_batch = int(self.engine.get_tensor_profile_shape(self.inputs[0], 0)[2][0])
        self.torch = torch

    def __call__(self, batch: np.ndarray) -> list[np.ndarray]:
        torch = self.torch
        x = torch.from_numpy(np.ascontiguousarray(batch, np.float32)).cuda()
        self.context.set_input_shape(self.inputs[0], tuple(x.shape))
        self.context.set_tensor_address(self.inputs[0], x.data_ptr())
        outs = []
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            outs.append(torch.empty(shape, dtype=torch.float32, device="cuda"))
            self.context.set_tensor_address(name, outs[-1].data_ptr())
        stream = torch.cuda.current_stream()
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise ConfigError("TensorRT execution failed")
        stream.synchronize()
        return [o.cpu().numpy() for o in outs]
