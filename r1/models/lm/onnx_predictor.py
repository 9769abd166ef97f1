"""The language-model Predictor over onnxruntime: the KV-cache step graph of `r1.models.lm.export`.

    p = r1.load("runs/r1lm-shakespeare-char", runtime="onnx")       # exported once, cached in <run>/onnx/
    p = r1.load("runs/r1lm-shakespeare-char", runtime="onnx-int8")  # + dynamic int8 of the Linear layers
    p.generate("To be", max_new_tokens=40, temperature=0.0)

Encoding, decoding, streaming and records are `TextPredictor`'s; only the token loop differs. It
handles the window as the torch path does: when the cache reaches block_size it is rebuilt from
the last 3/4 of the context (one prefill). The graph runs every layer: early exit is torch-only.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from r1 import cancel
from r1.errors import ConfigError
from r1.inference.runtimes import ONNX_RUNTIMES
from r1.models.lm.export import IDX, INT8_SUFFIX, empty_past, past_names, quantize_lm
from r1.models.lm.predictor import TextPredictor

log = logging.getLogger(__name__)


def int8_file(fp32: Path) -> Path:
    """The dynamic-int8 copy of an exported graph, beside it as `<stem>-int8.onnx` (made on first use;
    a temporary file where the folder is read-only)."""
    out = fp32.with_name(fp32.stem + INT8_SUFFIX + ".onnx")
    if out.is_file():
        return out
    from r1.inference.runtimes import write_cached

    return write_cached(out, lambda tmp: quantize_lm(fp32, tmp), f"onnx-int8: quantizing {fp32}")


class OnnxTextPredictor(TextPredictor):
    """Generation in onnxruntime behind the TextPredictor interface. Not thread-safe."""

    runtime = "onnx"

    def __init__(self, session, tokenizer, props: dict, source: str = "", runtime: str = "onnx"):
        self.session, self.tokenizer, self.source, self.runtime = session, tokenizer, source, runtime
        self.props = props
        self.meta = json.loads(props["r1.meta"])
        self.lm = json.loads(props["r1.lm"])
        self.quant = json.loads(props.get("r1.quant", "null"))
        self.n_layer = int(self.lm["n_layer"])
        self.past_names = past_names(self.n_layer)
        self.load_seconds = 0.0
        self.max_batch = None
        self.model = None  # no torch model behind this predictor

    @classmethod
    def load(cls, path: str | Path, runtime: str | None = None, threads: int = 1) -> "OnnxTextPredictor":
        from r1.inference.runtimes import open_family_onnx
        from r1.models.lm.tokenizer import load_tokenizer
        from r1.onnx.graph import ort_session, read_onnx_meta

        t0 = time.perf_counter()
        runtime, fp, props = open_family_onnx(path, runtime, threads, "lm", "r1.lm", "language-model")
        if runtime == "onnx-int8" and "r1.quant" not in props:
            fp = int8_file(Path(fp))
            props = read_onnx_meta(fp)
        p = cls(ort_session(fp, threads), load_tokenizer(json.loads(props["r1.meta"])), props, str(path), runtime)
        p.path = Path(fp)
        p.load_seconds = time.perf_counter() - t0
        return p

    @property
    def block_size(self) -> int:
        return int(self.lm["block_size"])

    def step(self, idx: np.ndarray, past: list[np.ndarray] | None) -> tuple[np.ndarray, list[np.ndarray]]:
        """New tokens (B, T) after the cached `past` (None: none) -> (logits (B, T, V), present)."""
        if past is None:
            past = empty_past(self.n_layer, idx.shape[0], self.lm["kv_heads"], self.lm["head_size"])
        outs = self.session.run(None, {IDX: np.ascontiguousarray(idx, np.int64), **dict(zip(self.past_names, past))})
        return outs[0], outs[1:]

    def token_batches(self, ids: np.ndarray, max_new_tokens: int, temperature: float = 0.0, top_k: int = 0,
                      top_p: float = 1.0, generator: torch.Generator | None = None):
        """Prompts of equal length (B, T) -> yields next ids (B,) per step, with the KV cache; the
        window rebuilt at block_size from its last 3/4, as `r1.models.lm.generate.generate_stream` does."""
        from r1.models.lm.generate import sample_next

        block = self.block_size
        ctx = np.asarray(ids, np.int64)[:, -block:]
        past = None
        for _ in range(max_new_tokens):
            cancel.check()
            if past is None or past[0].shape[2] >= block:
                ctx = ctx if past is None else ctx[:, -(block * 3 // 4):]
                logits, past = self.step(ctx, None)
            else:
                logits, past = self.step(ctx[:, -1:], past)
            nxt = sample_next(torch.from_numpy(logits[:, -1]), temperature, top_k, top_p, generator).numpy()
            yield nxt[:, 0]
            ctx = np.concatenate([ctx, nxt.astype(np.int64)], axis=1)

    def _token_stream(self, ids, max_new_tokens, temperature, top_k, top_p, eos, generator):
        for nxt in self.token_batches(np.array([ids]), max_new_tokens, temperature, top_k, top_p, generator):
            yield int(nxt[0])
            if eos is not None and int(nxt[0]) == eos:
                return

    def as_module(self) -> torch.nn.Module:
        """This graph as the torch model's interface (`m(idx)` -> logits (B, T, V) of every position, no
        cache) with the `r1_*` attributes evaluation and reports read: `r1 eval` and the pipeline's
        bench stage score it like the torch model."""
        return _StepModule(self)

    def warmup(self, runs: int = 1, batch_sizes: tuple[int, ...] = ()) -> None:
        """A few short generations (the first session runs allocate)."""
        for _ in range(max(1, runs)):
            for _tok in self.token_batches(np.zeros((1, 1), np.int64), 4):
                pass


class _StepModule(torch.nn.Module):
    def __init__(self, predictor: OnnxTextPredictor):
        super().__init__()
        self.predictor, self.session, self.path = predictor, predictor.session, predictor.path
        self.r1_meta, self.r1_family = predictor.meta, "lm"
        self.r1_model = json.loads(predictor.props.get("r1.model", "{}"))
        self.r1_data = json.loads(predictor.props.get("r1.data", "{}"))
        info = Path(predictor.path).with_name("model.json")
        if not self.r1_data and info.is_file():  # an export / quantize stage keeps the source's model.json
            self.r1_data = json.loads(info.read_text()).get("data", {})

    def forward(self, idx: torch.Tensor, targets=None) -> torch.Tensor:
        if targets is not None:
            raise ConfigError(f"{self.predictor.source}: an exported model cannot be trained")
        return torch.from_numpy(self.predictor.step(idx.cpu().numpy(), None)[0])


def stream_pieces(model, runtime: str, prompt: str, max_new_tokens: int, temperature: float, top_k: int,
                  top_p: float, seed: int, chat: bool | None, stats: dict | None = None):
    """`r1 generate --runtime onnx|onnx-int8`: the model loaded now, then its text pieces as they are
    generated (`stats["tokens"]`: how many tokens, once done)."""
    from r1.inference.predictor import Predictor

    if runtime not in ONNX_RUNTIMES:
        raise ConfigError(f"--runtime: {runtime!r} is not allowed; allowed: torch, {', '.join(ONNX_RUNTIMES)}")
    p = Predictor.load(model, runtime=runtime, threads=1)
    prompt = prompt or p.tokenizer.decode([0])  # as the torch path: an empty prompt starts from token 0

    def pieces():
        for record in p.stream(prompt, max_new_tokens, temperature, top_k, top_p, seed, chat):
            if record.get("done"):
                if stats is not None:
                    stats["tokens"] = record["generated_tokens"]
            else:
                yield record["text"]

    return pieces()
