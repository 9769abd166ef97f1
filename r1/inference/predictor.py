"""The one Predictor: inputs -> results, over torch eager, onnxruntime or TensorRT, for every family.

    import r1
    p = r1.load("runs/quickstart/student", runtime="onnx", threads=1)   # or "model.onnx", an .engine
    results = p.predict(["examples/digit_3.png", pil_image])             # list of Result, batched
    results[0].to_json()      # the family's JSON record
    results[0].save("out.png")  # visual families: the record drawn on its input image

`r1.load` reads the family from the artifact and asks the family's spec (`r1.family`): image
families get this module's `Predictor` (pre-process -> run -> post-process with the spec's
`FamilyIO`); a family with its own predictor class (text in, text out) gets that class, which
follows the same protocol (`predict(inputs, **options) -> list[Result]`, `family`, `inputs`,
`runtime`, `warmup`). A non-torch runtime turns graph outputs into what the torch model returns
with the spec's export hook. `runtime="onnx"` on a run dir exports once and reuses the file,
cached in the run dir under `onnx/` and keyed by the weights' hash.
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
from r1.family import get_family
from r1.inference.images import as_image
from r1.inference.result import Result, family_result
from r1.inference.runtimes import RUNTIMES, artifact_family, check_runtime, infer_runtime, onnx_file

log = logging.getLogger(__name__)


class Predictor:
    """A loaded image model behind one interface. Not thread-safe: call it from one thread at a time."""

    inputs = "image"

    def __init__(self, runner: Callable[[np.ndarray], list[np.ndarray] | object], *, family: str, meta: dict,
                 runtime: str, decode: Callable[[list, dict], object] | None = None, props: dict | None = None,
                 max_batch: int | None = None, source: str = "", data: dict | None = None):
        self._runner, self._decode = runner, decode
        self.family, self.meta, self.runtime, self.props = family, meta, runtime, props or {}
        self.io = get_family(family).io
        self.result_type = family_result(family)  # the family's typed Result (attribute access to its fields)
        self.max_batch = max_batch  # None: any batch size
        self.source = source
        self.data = data or {}  # the data config the model was trained on (evaluation rebuilds it)
        self.load_seconds = 0.0

    # ------------------------------------------------------------------ construction
    @classmethod
    def load(cls, path: str | Path, runtime: str | None = None, threads: int = 1, inter_threads: int = 1):
        """Run dir / .safetensors (torch), .onnx (onnxruntime CPU), .engine (TensorRT) -> the family's
        Predictor. `runtime="onnx"` on a run dir uses its cached ONNX export (made on first use).
        `threads` sets torch's intra-op threads (process-wide) or the onnxruntime session's."""
        t0 = time.perf_counter()
        runtime = runtime or infer_runtime(path)
        if threads < 1:
            raise ConfigError(f"threads: must be >= 1, got {threads}")
        if runtime not in RUNTIMES:
            raise ConfigError(f"--runtime: {runtime!r} is not allowed; allowed: {', '.join(RUNTIMES)}")
        family = artifact_family(path)
        check_runtime(family, runtime)
        spec = get_family(family)
        kind = infer_runtime(path)
        if spec.predictor is not None:  # the family brings its own predictor (e.g. text in, text out)
            p = spec.hook("predictor")(path, runtime, threads)
        elif runtime == "torch":
            if kind != "torch":
                raise ConfigError(f"{path}: the torch runtime needs a run dir or .safetensors, not {Path(path).suffix}")
            p = cls._load_torch(path, threads)
        elif runtime == "onnx":
            if kind == "tensorrt":
                raise ConfigError(f"{path}: a TensorRT engine runs only with --runtime tensorrt")
            p = cls._load_onnx(onnx_file(path), threads, inter_threads)
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

        p = cls(runner, family=model.r1_family, meta=model.r1_meta, runtime="torch", source=str(path),
                data=model.r1_data)
        p.model = model
        return p

    @classmethod
    def _load_onnx(cls, path: Path, threads: int, inter_threads: int) -> "Predictor":
        from r1.onnx.export import get_export_hook
        from r1.onnx.graph import INPUT_NAME, ort_session, read_onnx_meta

        props = read_onnx_meta(path)
        session = ort_session(path, threads, inter_threads)
        family = props["r1.family"]
        max_batch = None
        shape = json.loads(props["r1.input"])["shape"]
        if shape[0] != -1:
            max_batch = int(shape[0])

        def runner(batch: np.ndarray):
            return session.run(None, {INPUT_NAME: np.ascontiguousarray(batch, np.float32)})

        data = json.loads(props.get("r1.data", "{}"))
        info = Path(path).with_name("model.json")
        if not data and info.is_file():  # an export stage keeps the source's model.json beside the file
            data = json.loads(info.read_text()).get("data", {})
        p = cls(runner, family=family, meta=json.loads(props["r1.meta"]), runtime="onnx",
                decode=get_export_hook(family).decode, props=props, max_batch=max_batch, source=str(path),
                data=data)
        p.session, p.path = session, Path(path)
        return p

    @classmethod
    def _load_tensorrt(cls, path) -> "Predictor":
        from r1.inference.tensorrt import TensorRTRunner, require_tensorrt
        from r1.onnx.export import get_export_hook

        require_tensorrt()
        if infer_runtime(path) != "tensorrt":
            raise ConfigError(f"{path}: --runtime tensorrt needs an engine built by `r1 export --format tensorrt`")
        runner = TensorRTRunner(path)
        family = runner.props["r1.family"]
        return cls(runner, family=family, meta=json.loads(runner.props["r1.meta"]), runtime="tensorrt",
                   decode=get_export_hook(family).decode, props=runner.props, max_batch=runner.max_batch,
                   source=str(path), data=json.loads(runner.props.get("r1.data", "{}")))

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

    def postprocess(self, outputs: object, top_k: int = 3, images: list | None = None, **options) -> list[dict]:
        """`images`: the input images, or anything with their `width` and `height` (detections are
        rescaled to each image's pixels; post-processing reads nothing else of them)."""
        return self.io.postprocess(outputs, self.meta, {"top_k": top_k, "images": images, **options})

    def predict(self, inputs: list, top_k: int = 3, batch_size: int = 32, **options) -> list[Result]:
        """Images (PIL, file paths, encoded bytes or uint8 arrays) -> one Result per input, run in
        batches of `batch_size`; `options` reach the family's post-processing."""
        results: list[Result] = []
        for start in range(0, len(inputs), batch_size):
            images = [as_image(x) for x in inputs[start:start + batch_size]]
            records = self.postprocess(self.forward(self.preprocess(images)), top_k, images, **options)
            results += [self.result_type(r, im, self.io.draw, self.meta) for r, im in zip(records, images)]
        return results

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

    def as_module(self) -> torch.nn.Module:
        """This predictor as a torch module `m(images) -> outputs` with the `r1_*` attributes that
        evaluation and reports read: lets them score an ONNX or TensorRT model like a torch one."""
        return _PredictorModule(self)


class _PredictorModule(torch.nn.Module):
    def __init__(self, predictor: Predictor):
        super().__init__()
        self.predictor = predictor
        self.r1_meta, self.r1_family, self.r1_data = predictor.meta, predictor.family, predictor.data
        self.r1_model = json.loads(predictor.props.get("r1.model", "{}"))
        if hasattr(predictor, "session"):
            self.session, self.path = predictor.session, predictor.path

    def forward(self, images: torch.Tensor, targets=None):
        if targets is not None:
            raise ConfigError(f"{self.predictor.source}: an exported model cannot be trained")
        out = self.predictor.forward(images.detach().cpu().numpy().astype(np.float32))
        return torch.from_numpy(out) if isinstance(out, np.ndarray) else out


def _concat(parts: list):
    first = parts[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(parts)
    if isinstance(first, np.ndarray):
        return np.concatenate(parts)
    if isinstance(first, list):  # per-image records (e.g. detections)
        return [r for p in parts for r in p]
    raise TypeError(f"cannot concatenate outputs of type {type(first).__name__}")


def load(path: str | Path, runtime: str | None = None, threads: int = 1, inter_threads: int = 1):
    """`r1.load`: any trained or exported model as its family's Predictor (see `Predictor.load`)."""
    return Predictor.load(path, runtime=runtime, threads=threads, inter_threads=inter_threads)


def load_any(path: str | Path, device: str | torch.device = "cpu", threads: int = 1, runtime: str | None = None,
             **fields) -> torch.nn.Module:
    """A torch module for any artifact: a run dir / .safetensors (`load_model`), or an .onnx / TensorRT
    engine behind the module interface (`model(images)` -> the family's outputs), so evaluation and
    reports score exported models like trained ones. `runtime` (onnx, ...) runs a run dir in that
    runtime (its cached export) instead of torch."""
    from r1.artifacts import load_model

    runtime = runtime or infer_runtime(path)
    if runtime != "torch":
        if fields:
            raise ConfigError(f"{path}: model settings {sorted(fields)} cannot change in an exported graph")
        return Predictor.load(path, runtime=runtime, threads=threads).as_module()
    return load_model(path, device, **fields)
