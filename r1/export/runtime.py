"""The one Predictor: pre-process -> run -> post-process, over torch eager, onnxruntime or TensorRT.

    p = Predictor.load("runs/digits", runtime="torch", threads=1)      # or "model.onnx"
    # a language-model run dir gives an r1.export.text.TextPredictor (text in, text out)
    records = p.predict([PIL images])        # the family's records, identical for every runtime
    logits = p.run(batch)                    # raw: (B, 3, H, W) float32 -> first output, numpy

Pre- and post-processing come from the family's `r1.predict.FamilyIO`; a non-torch runtime first
turns the graph outputs into what the torch model returns, via the family's export hook.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from r1.errors import ConfigError

log = logging.getLogger(__name__)
RUNTIMES = ("torch", "onnx", "tensorrt")


def infer_runtime(path: str | Path) -> str:
    suffix = Path(path).suffix
    return {".onnx": "onnx", ".engine": "tensorrt", ".plan": "tensorrt"}.get(suffix, "torch")


class Predictor:
    """A loaded model behind one interface. Not thread-safe: call it from one thread at a time."""

    def __init__(self, runner: Callable[[np.ndarray], list[np.ndarray] | object], *, family: str, meta: dict,
                 runtime: str, decode: Callable[[list, dict], object] | None = None, props: dict | None = None,
                 max_batch: int | None = None, source: str = ""):
        import r1.models  # noqa: F401  (each family registers its FamilyIO on import)
        from r1.predict import get_io

        self._runner, self._decode = runner, decode
        self.family, self.meta, self.runtime, self.props = family, meta, runtime, props or {}
        self.io = get_io(family)
        self.max_batch = max_batch  # None: any batch size
        self.source = source
        self.load_seconds = 0.0

    # ------------------------------------------------------------------ construction
    @classmethod
    def load(cls, path: str | Path, runtime: str | None = None, threads: int = 1,
             inter_threads: int = 1) -> "Predictor":
        """Run dir / .safetensors (torch), .onnx (onnxruntime CPU), .engine (TensorRT).

        `runtime="onnx"` on a run dir exports it to a temporary .onnx first.
        `threads` sets torch's intra-op threads (process-wide) or the onnxruntime session's."""
        t0 = time.perf_counter()
        runtime = runtime or infer_runtime(path)
        if runtime not in RUNTIMES:
            raise ConfigError(f"--runtime: {runtime!r} is not allowed; allowed: {', '.join(RUNTIMES)}")
        if threads < 1:
            raise ConfigError(f"threads: must be >= 1, got {threads}")
        kind = infer_runtime(path)
        if kind == "torch" and _family(path) == "lm":  # text in, text out: its own predictor
            from r1.export.text import TextPredictor
            return TextPredictor.load(path, runtime, threads)
        if runtime == "torch":
            if kind != "torch":
                raise ConfigError(f"{path}: the torch runtime needs a run dir or .safetensors, not {Path(path).suffix}")
            p = cls._load_torch(path, threads)
        elif runtime == "onnx":
            if kind == "tensorrt":
                raise ConfigError(f"{path}: a TensorRT engine runs only with --runtime tensorrt")
            p = cls._load_onnx(cls._as_onnx(path), threads, inter_threads)
        else:
            p = cls._load_tensorrt(path)
        p.load_seconds = time.perf_counter() - t0
        log.info("loaded %s with %s in %.2fs", path, runtime, p.load_seconds)
        return p

    @classmethod
    def _load_torch(cls, path, threads: int) -> "Predictor":
        from r1.artifacts import load_model

        torch.set_num_threads(threads)
        model = load_model(path)
        # image models run channels-last: oneDNN's convolutions are faster on NHWC (measured on the
        # CPUs here: 1.1-1.3x at batch 1, 1.2-2.6x at batch 32; benchmarks/RESULTS.md, serving)
        model = model.to(memory_format=torch.channels_last)

        @torch.inference_mode()
        def runner(batch: np.ndarray):
            x = torch.from_numpy(np.ascontiguousarray(batch, np.float32))
            return model(x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x)

        p = cls(runner, family=model.r1_family, meta=model.r1_meta, runtime="torch", source=str(path))
        p.model = model
        return p

    @staticmethod
    def _as_onnx(path) -> Path:
        if infer_runtime(path) == "onnx":
            return Path(path)
        import tempfile

        from r1.export.onnx import export_onnx

        out = Path(tempfile.mkdtemp(prefix="r1-onnx-")) / "model.onnx"
        export_onnx(path, out)
        return out

    @classmethod
    def _load_onnx(cls, path: Path, threads: int, inter_threads: int) -> "Predictor":
        from r1.export.onnx import INPUT_NAME, get_export_hook, ort_session, read_onnx_meta

        props = read_onnx_meta(path)
        session = ort_session(path, threads, inter_threads)
        family = props["r1.family"]
        hook = get_export_hook(family)
        max_batch = None
        shape = json.loads(props["r1.input"])["shape"]
        if shape[0] != -1:
            max_batch = int(shape[0])

        def runner(batch: np.ndarray):
            return session.run(None, {INPUT_NAME: np.ascontiguousarray(batch, np.float32)})

        return cls(runner, family=family, meta=json.loads(props["r1.meta"]), runtime="onnx",
                   decode=hook.decode, props=props, max_batch=max_batch, source=str(path))

    @classmethod
    def _load_tensorrt(cls, path) -> "Predictor":
        from r1.export.onnx import get_export_hook
        from r1.export.tensorrt import TensorRTRunner, require_tensorrt

        require_tensorrt()
        if infer_runtime(path) != "tensorrt":
            raise ConfigError(f"{path}: --runtime tensorrt needs an engine built by `r1 export --format tensorrt`")
        runner = TensorRTRunner(path)
        family = runner.props["r1.family"]
        return cls(runner, family=family, meta=json.loads(runner.props["r1.meta"]), runtime="tensorrt",
                   decode=get_export_hook(family).decode, props=runner.props, max_batch=runner.max_batch,
                   source=str(path))

    # ------------------------------------------------------------------ inference
    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one preprocessed image."""
        h, w = self.meta["preprocess"]["size"]
        return 3, int(h), int(w)

    def preprocess(self, images: list[Image.Image]) -> np.ndarray:
        """PIL images -> float32 batch (B, C, H, W)."""
        return np.ascontiguousarray(self.io.preprocess(images, self.meta).numpy(), np.float32)

    def forward(self, batch: np.ndarray) -> object:
        """Batch -> what the family's torch model returns in eval mode (e.g. logits)."""
        if self.max_batch is not None and len(batch) > self.max_batch:
            parts = [self.forward(batch[i:i + self.max_batch]) for i in range(0, len(batch), self.max_batch)]
            return _concat(parts)
        out = self._runner(batch)
        return out if self._decode is None else self._decode(out, self.props)

    def postprocess(self, outputs: object, top_k: int = 3, images: list | None = None) -> list[dict]:
        """`images`: the input images, or anything with their `width` and `height` (detections are
        rescaled to each image's pixels; post-processing reads nothing else of them)."""
        return self.io.postprocess(outputs, self.meta, {"top_k": top_k, "images": images})

    def predict(self, images: list[Image.Image], top_k: int = 3) -> list[dict]:
        """PIL images -> one record per image (the family's typed records)."""
        if not images:
            return []
        return self.postprocess(self.forward(self.preprocess(images)), top_k, images)

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Raw graph call for benchmarks: (B, C, H, W) float32 -> first output as numpy."""
        out = self._runner(batch)
        first = out[0] if isinstance(out, (list, tuple)) else out
        return first.detach().cpu().numpy() if isinstance(first, torch.Tensor) else np.asarray(first)

    def warmup(self, runs: int = 3, batch_sizes: tuple[int, ...] = (1,)) -> None:
        """Run zeros through every batch size a server will use (first calls allocate and plan)."""
        for b in batch_sizes:
            x = np.zeros((b, *self.input_shape), np.float32)
            for _ in range(runs):
                self.forward(x)


def _family(path) -> str:
    from r1.artifacts import read_info
    return read_info(path)["family"]


def _concat(parts: list):
    first = parts[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(parts)
    if isinstance(first, np.ndarray):
        return np.concatenate(parts)
    if isinstance(first, list):  # per-image records (e.g. detections)
        return [r for p in parts for r in p]
    raise TypeError(f"cannot concatenate outputs of type {type(first).__name__}")
