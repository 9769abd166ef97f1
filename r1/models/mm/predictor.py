"""The Predictor of the multimodal family: (image, question) pairs -> answers.

    p = r1.load("runs/mm-sortofclevr")          # the mm family spec names this class
    p.predict([("scene.png", "what is the shape of the red object?")], top_k=3)
    # [{"answer": "circle", "probability": 0.98,
    #   "top_k": [{"answer": "circle", "probability": 0.98}, {"answer": "square", ...}, ...]}]

An input is a pair `(image, text)` or a mapping `{"image": ..., "text": ...}`; the image is a PIL
image, a file path, encoded bytes or a uint8 (H, W, 3) array (as for image models). Questions are
lower-cased (when the data did so) and tokenised with the tokenizer saved in the model's meta.
`runtime="onnx"` / `"onnx-int8"` (or an .onnx path) load `r1.models.mm.onnx_predictor.OnnxVQAPredictor`
(the exported two-input graph in onnxruntime, fp32 or static int8).
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from r1.errors import ConfigError, DataError


class VQAPredictor:
    """A loaded mm model, its tokenizer and preprocessing. Not thread-safe: one call at a time."""

    family, runtime, inputs = "mm", "torch", "image+text"

    def __init__(self, model, source: str = ""):
        from r1.models.lm.tokenizer import load_tokenizer

        self.model, self.source = model, source
        self.meta = model.r1_meta
        self.tokenizer = load_tokenizer(self.meta)
        self.pad_id = int(self.meta.get("pad_id", 0))
        self.max_len = int(self.meta.get("max_len") or 0)
        self.load_seconds = 0.0
        self.max_batch = None

    @classmethod
    def load(cls, path: str | Path, runtime: str | None = None, threads: int = 1) -> "VQAPredictor":
        """The torch runtime (`load_predictor` in family.py picks the ONNX one for onnx / onnx-int8)."""
        from r1.artifacts import load_model
        from r1.inference.runtimes import infer_runtime

        runtime = runtime or infer_runtime(path)
        if runtime != "torch":
            raise ConfigError(f"--runtime {runtime}: multimodal models run with torch, onnx or onnx-int8")
        if threads < 1:
            raise ConfigError(f"threads: must be >= 1, got {threads}")
        t0 = time.perf_counter()
        torch.set_num_threads(threads)
        p = cls(load_model(path), str(path))
        p.load_seconds = time.perf_counter() - t0
        return p

    def as_module(self) -> torch.nn.Module:
        """The model behind this predictor (`m(inputs)` -> logits), as evaluation takes it."""
        return self.model

    # ------------------------------------------------------------------ inputs
    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Questions -> padded token ids (B, T) and mask; DataError when one has no known token."""
        ids = []
        for text in texts:
            if not text.strip():
                raise DataError("text: empty question")
            if self.meta.get("text", {}).get("lowercase"):
                text = text.lower()
            tok = self.tokenizer.encode(text.strip())
            if self.max_len:
                tok = tok[:self.max_len]
            if not tok:
                raise DataError(f"text {text[:40]!r}: none of its characters are in the model's vocabulary")
            ids.append(tok)
        width = max(len(i) for i in ids)
        tokens = torch.full((len(ids), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.bool)
        for r, i in enumerate(ids):
            tokens[r, :len(i)] = torch.tensor(i)
            mask[r, :len(i)] = True
        return tokens, mask

    def unknown_words(self, text: str) -> tuple[list[str], list[str]]:
        """(the question's words, those not among its training questions' words, `meta.text.words`; a model
        saved without them: those its tokenizer cannot encode): the text families' one contract."""
        from r1.models.lm.tokenizer import unknown_words

        text_meta = self.meta.get("text", {})
        return unknown_words(text, self.tokenizer, text_meta.get("words"), bool(text_meta.get("lowercase")))

    @staticmethod
    def split_pair(item) -> tuple[object, str]:
        if isinstance(item, dict):
            missing = [k for k in ("image", "text") if k not in item]
            if missing:
                raise ConfigError(f"predict: an image+text input needs the keys image and text; missing {missing}")
            image, text = item["image"], item["text"]
        elif isinstance(item, (tuple, list)) and len(item) == 2:
            image, text = item
        else:
            raise ConfigError(f"predict: a multimodal model takes (image, text) pairs or {{'image', 'text'}} "
                              f"mappings, got {type(item).__name__}")
        if not isinstance(text, str):
            raise ConfigError(f"predict: text must be a string, got {type(text).__name__}")
        return image, text

    def batch(self, items: list) -> dict[str, torch.Tensor]:
        """Pairs -> the model's input dict."""
        from r1.inference.images import as_image, resize_normalize

        pairs = [self.split_pair(x) for x in items]
        images = resize_normalize([as_image(im) for im, _ in pairs], self.meta)
        tokens, mask = self.encode([t for _, t in pairs])
        return {"images": images, "tokens": tokens, "mask": mask}

    # ------------------------------------------------------------------ inference
    def records(self, logits: torch.Tensor, top_k: int = 3) -> list[dict]:
        probs = logits.float().softmax(-1)
        k = max(1, min(int(top_k), probs.shape[-1]))
        answers = self.meta["answers"]
        scores, idx = probs.topk(k, dim=-1)
        return [{"answer": answers[int(i[0])], "probability": float(s[0]),
                 "top_k": [{"answer": answers[int(c)], "probability": float(v)} for v, c in zip(s, i)]}
                for s, i in zip(scores, idx)]

    @torch.inference_mode()
    def predict(self, inputs: list, top_k: int = 3, batch_size: int = 32, **options) -> list:
        """(image, question) pairs -> one Result per pair: answer, probability, top_k answers."""
        from r1.inference.result import family_result

        if options:
            raise ConfigError(f"predict: unknown option(s) {sorted(options)} for a multimodal model; "
                              f"allowed: top_k, batch_size")
        results = []
        for start in range(0, len(inputs), batch_size):
            logits = self.model(self.batch(inputs[start:start + batch_size]))
            results += [family_result(self.family)(r) for r in self.records(logits, top_k)]
        return results

    def warmup(self, runs: int = 1, batch_sizes: tuple[int, ...] = (1,)) -> None:
        """Blank images with a one-token question through every batch size (first calls allocate)."""
        h, w = self.meta["preprocess"]["size"]
        for b in batch_sizes or (1,):
            x = {"images": torch.zeros(b, 3, h, w), "tokens": torch.zeros(b, 1, dtype=torch.long),
                 "mask": torch.ones(b, 1, dtype=torch.bool)}
            for _ in range(max(1, runs)):
                with torch.inference_mode():
                    self.model(x)
