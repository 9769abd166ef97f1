"""The Predictor of the language-model family: prompt text -> generated text, with the KV cache.

    p = r1.load("runs/lm-embedded/pretrain")     # the lm family spec names this class
    p.predict(["To be", "Or not"], max_new_tokens=40, temperature=0.0)   # list of Result
    p.generate("To be", max_new_tokens=40, temperature=0.0)
    # {"text": ..., "prompt_tokens": 5, "context_tokens": 5, "generated_tokens": 40,
    #  "finish_reason": "length", "seed": ...}

Generation is `r1.models.lm.generate.generate_stream` (KV cache, early exit at the model's configured
threshold); `runtime="onnx"` / `"onnx-int8"` load `r1.models.lm.onnx_predictor.OnnxTextPredictor`
(the exported KV-cache graph in onnxruntime, fp32 or dynamic int8; every layer runs).
"""
from __future__ import annotations

import logging
import random
import time
from pathlib import Path

import torch

from r1.errors import ConfigError, DataError

log = logging.getLogger(__name__)


class TextPredictor:
    """A loaded language model and its tokenizer. Not thread-safe: one call at a time."""

    family, runtime, inputs = "lm", "torch", "text"

    def __init__(self, model, tokenizer, source: str = ""):
        self.model, self.tokenizer, self.source = model, tokenizer, source
        self.meta = model.r1_meta
        self.load_seconds = 0.0
        self.max_batch = None

    @classmethod
    def load(cls, path: str | Path, runtime: str | None = None, threads: int = 1) -> "TextPredictor":
        """The torch runtime (`load_predictor` in family.py picks the ONNX one for onnx / onnx-int8)."""
        from r1.inference.runtimes import infer_runtime
        from r1.models.lm.generate import load_lm

        runtime = runtime or infer_runtime(path)
        if runtime != "torch":
            raise ConfigError(f"--runtime {runtime}: language models run with torch, onnx or onnx-int8")
        if threads < 1:
            raise ConfigError(f"threads: must be >= 1, got {threads}")
        t0 = time.perf_counter()
        torch.set_num_threads(threads)
        model, tokenizer = load_lm(path)
        p = cls(model, tokenizer, str(path))
        p.load_seconds = time.perf_counter() - t0
        return p

    @property
    def block_size(self) -> int:
        return int(self.model.block_size)

    def encode(self, text: str, chat: bool | None = None) -> list[int]:
        """Prompt text (wrapped in the chat template where the model has one and `chat` allows)
        -> token ids. DataError when nothing of it is in the vocabulary."""
        from r1.models.lm.generate import prompt_text

        ids = self.tokenizer.encode(prompt_text(self.meta, text, chat))
        if not ids:
            raise DataError("text: none of its characters are in the model's vocabulary")
        return ids

    def unknown_words(self, text: str) -> tuple[list[str], list[str]]:
        """(the prompt's words, those the tokenizer cannot encode): the text families' one contract."""
        from r1.models.lm.tokenizer import unknown_words

        return unknown_words(text, self.tokenizer)

    def _token_stream(self, ids: list[int], max_new_tokens: int, temperature: float, top_k: int, top_p: float,
                      eos: int | None, generator: torch.Generator):
        """Next-token ids (ints) for prompt `ids`, one per step. A runtime other than torch
        overrides this alone: encoding, decoding, streaming and records are shared."""
        from r1.models.lm.generate import default_exit_threshold, generate_stream

        for nxt in generate_stream(self.model, torch.tensor([ids]), max_new_tokens, temperature=temperature,
                                   top_k=top_k, top_p=top_p, use_cache=True,
                                   exit_threshold=default_exit_threshold(self.model), eos_id=eos,
                                   generator=generator):
            yield int(nxt[0, 0])

    @torch.inference_mode()
    def stream(self, text: str, max_new_tokens: int = 64, temperature: float = 0.8, top_k: int = 0,
               top_p: float = 1.0, seed: int | None = None, chat: bool | None = None):
        """One prompt -> yields {"text": piece} as tokens arrive (incomplete UTF-8 held back),
        then one last record: `generate`'s dict with "done": True."""
        from r1.models.lm.generate import check_sampling

        check_sampling(temperature, top_k, top_p)
        ids = self.encode(text, chat)
        seed = random.randrange(2 ** 63) if seed is None else int(seed)
        eos = self.tokenizer.token_to_id("<|endoftext|>")
        out: list[int] = []
        emitted = ""
        for tok in self._token_stream(ids, max_new_tokens, temperature, top_k, top_p, eos,
                                      torch.Generator().manual_seed(seed)):
            out.append(tok)
            decoded = self.tokenizer.decode(out)
            if not decoded.endswith("\ufffd") and len(decoded) > len(emitted):
                yield {"text": decoded[len(emitted):]}
                emitted = decoded
        finish = "eos" if eos is not None and out and out[-1] == eos else "length"
        yield {"text": self.tokenizer.decode(out), "prompt_tokens": len(ids),
               "context_tokens": min(len(ids), self.block_size), "generated_tokens": len(out),
               "finish_reason": finish, "seed": seed, "done": True}

    def generate(self, text: str, max_new_tokens: int = 64, temperature: float = 0.8, top_k: int = 0,
                 top_p: float = 1.0, seed: int | None = None, chat: bool | None = None) -> dict:
        """One prompt -> the generated continuation and its token counts (see the module doc)."""
        *_, last = self.stream(text, max_new_tokens, temperature, top_k, top_p, seed, chat)
        last.pop("done")
        return last

    def predict(self, inputs: list[str], **options) -> list:
        """Prompts -> one Result per prompt (`generate`'s record); options are `generate`'s
        keyword arguments (max_new_tokens, temperature, top_k, top_p, seed, chat)."""
        from r1.inference.result import family_result

        bad = [x for x in inputs if not isinstance(x, str)]
        if bad:
            raise ConfigError(f"predict: a language model takes text prompts, got {type(bad[0]).__name__}")
        return [family_result(self.family)(self.generate(text, **options)) for text in inputs]

    def token_batches(self, ids, max_new_tokens: int, temperature: float = 0.0, top_k: int = 0,
                      top_p: float = 1.0, generator: torch.Generator | None = None):
        """Prompts of equal length (B, T) -> yields next ids (B,) per step: KV cache, the model's default
        early exit (as `OnnxTextPredictor.token_batches`, for batched benchmarks)."""
        from r1.models.lm.generate import default_exit_threshold, generate_stream

        for nxt in generate_stream(self.model, torch.as_tensor(ids, dtype=torch.long), max_new_tokens,
                                   temperature=temperature, top_k=top_k, top_p=top_p, use_cache=True,
                                   exit_threshold=default_exit_threshold(self.model), generator=generator):
            yield nxt[:, 0].numpy()

    def warmup(self, runs: int = 1, batch_sizes: tuple[int, ...] = ()) -> None:
        """A few short generations (the first calls allocate)."""
        from r1.models.lm.generate import generate

        for _ in range(max(1, runs)):
            generate(self.model, torch.zeros((1, 1), dtype=torch.long), 4, temperature=0.0)
