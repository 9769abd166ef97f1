"""The multimodal Predictor over onnxruntime: the two-input graph of `r1.models.mm.export`.

    p = r1.load("runs/mm-sortofclevr", runtime="onnx")       # exported once, cached in <run>/onnx/
    p = r1.load("runs/mm-sortofclevr", runtime="onnx-int8")  # + static int8, calibrated on the run's data
    p = r1.load("out/model.onnx")                             # an export or an `r1 quantize` output
    p.predict([("scene.png", "what is the shape of the red object?")], top_k=3)

Inputs, tokenisation and records are `VQAPredictor`'s; only the forward differs.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from r1.errors import ConfigError
from r1.models.mm.export import INPUTS
from r1.models.mm.predictor import VQAPredictor

log = logging.getLogger(__name__)
INT8_SUFFIX = "-int8"


def int8_file(fp32: Path, data_cfg: dict) -> Path:
    """The static-int8 copy of an exported graph, beside it as `<stem>-int8.onnx` (made on first use,
    calibrated on the model's training data; a temporary file where the folder is read-only)."""
    out = fp32.with_name(fp32.stem + INT8_SUFFIX + ".onnx")
    if out.is_file():
        return out
    from r1.compress.quantize import quantize_onnx
    from r1.inference.runtimes import write_cached

    def quantize(tmp: Path) -> None:
        quantize_onnx(fp32, tmp, "static", data_cfg)

    return write_cached(out, quantize, f"onnx-int8: quantizing {fp32}")


class SessionModule(torch.nn.Module):
    """An onnxruntime session as the torch model's interface: `m(inputs)` -> logits, with the `r1_*`
    attributes evaluation and reports read."""

    def __init__(self, session, props: dict, data: dict, path: Path | None = None):
        super().__init__()
        self.session, self.path = session, path  # path: the graph file (reports count its initializers)
        self.r1_meta, self.r1_family, self.r1_data = json.loads(props["r1.meta"]), "mm", data
        self.r1_model = json.loads(props.get("r1.model", "{}"))
        self.max_len = int(json.loads(props.get("r1.mm", "{}")).get("max_len") or 0)

    def forward(self, inputs: dict, targets=None) -> torch.Tensor:
        if targets is not None:
            raise ConfigError("an exported model cannot be trained")
        if not isinstance(inputs, dict) or set(INPUTS) - set(inputs):
            raise ConfigError(f"mm model inputs: expected a dict with {', '.join(INPUTS)}")
        tokens, mask = inputs["tokens"], inputs["mask"]
        if self.max_len and tokens.shape[1] > self.max_len:  # as the torch model: longer questions are cut
            tokens, mask = tokens[:, :self.max_len], mask[:, :self.max_len]
        feeds = {"images": np.ascontiguousarray(inputs["images"].detach().cpu().numpy(), np.float32),
                 "tokens": np.ascontiguousarray(tokens.cpu().numpy(), np.int64),
                 "mask": np.ascontiguousarray(mask.cpu().numpy(), np.bool_)}
        return torch.from_numpy(self.session.run(None, feeds)[0])


class OnnxVQAPredictor(VQAPredictor):
    """Question answering in onnxruntime behind the VQAPredictor interface. Not thread-safe."""

    runtime = "onnx"

    def __init__(self, module: SessionModule, props: dict, source: str = "", runtime: str = "onnx"):
        from r1.models.lm.tokenizer import load_tokenizer

        self.model, self.props, self.source, self.runtime = module, props, source, runtime
        self.meta = module.r1_meta
        self.data = module.r1_data
        self.tokenizer = load_tokenizer(self.meta)
        self.pad_id = int(self.meta.get("pad_id", 0))
        self.max_len = module.max_len or int(self.meta.get("max_len") or 0)
        self.quant = json.loads(props.get("r1.quantized", "null"))
        self.load_seconds = 0.0
        self.max_batch = None

    @classmethod
    def load(cls, path: str | Path, runtime: str | None = None, threads: int = 1) -> "OnnxVQAPredictor":
        from r1.inference.runtimes import open_family_onnx
        from r1.onnx.graph import ort_session, read_onnx_meta

        t0 = time.perf_counter()
        runtime, fp, props = open_family_onnx(path, runtime, threads, "mm", "r1.mm", "multimodal")
        data = json.loads(props.get("r1.data", "{}"))
        info = fp.with_name("model.json")
        if not data and info.is_file():  # an export / quantize stage keeps the source's model.json beside it
            data = json.loads(info.read_text()).get("data", {})
        if runtime == "onnx-int8" and "r1.quantized" not in props:
            if not data:
                raise ConfigError(f"{path}: --runtime onnx-int8 calibrates on the model's data, and none is stored")
            fp = int8_file(fp, data)
            props = read_onnx_meta(fp)
        p = cls(SessionModule(ort_session(fp, threads), props, data, fp), props, str(path), runtime)
        p.path = fp
        p.load_seconds = time.perf_counter() - t0
        return p

    def as_module(self) -> torch.nn.Module:
        """This predictor as the torch model's interface (`m(inputs)` -> logits): evaluation scores it."""
        return self.model
