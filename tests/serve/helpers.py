"""Serve-test helpers: a real uvicorn server on a free loopback port (in a thread), PNG bytes,
a fake predictor with a controllable delay, and a picklable loader of it (for the worker process)."""
from __future__ import annotations

import io
import os
import socket
import threading
import time
from contextlib import contextmanager

import numpy as np
import uvicorn
from PIL import Image

from r1.serve.server import uvicorn_config


@contextmanager
def running_server(app, startup_timeout: float = 30.0, **options):
    """Yield the base URL of `app` served on 127.0.0.1; stop (graceful shutdown) on exit.
    `options` override uvicorn settings (`r1.serve.server.uvicorn_config`)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn_config(app, **{"log_level": "warning", "timeout_graceful_shutdown": 10,
                                                   **options}))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}", server
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()



def png_bytes(size=(32, 32), mode="RGB", seed=0, fmt="PNG") -> bytes:
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    arr = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).convert(mode).save(buf, format=fmt)
    return buf.getvalue()


class FakePredictor:
    """Stands in for r1.export.Predictor: `delay` seconds per batch, records batch sizes, and
    can block loading on an event (readiness tests)."""

    family, runtime, inputs, input_shape = "cls", "fake", "image", (3, 8, 8)

    def __init__(self, delay: float = 0.0, nan_width: int = 0):
        self.delay, self.batches, self.nan_width = delay, [], nan_width
        self.meta = {"classes": ["a", "b"], "preprocess": {"size": [8, 8], "mean": [0.5] * 3, "std": [0.5] * 3}}

    def preprocess(self, images):
        out = np.zeros((len(images), 3, 8, 8), np.float32)
        out[:, 0, 0, 0] = [im.width for im in images]  # forward answers NaN for images `nan_width` wide
        return out

    def forward(self, batch):
        self.batches.append(len(batch))
        time.sleep(self.delay)
        out = np.tile(np.array([[2.0, 1.0]], np.float32), (len(batch), 1))
        out[batch[:, 0, 0, 0] == self.nan_width] = np.nan
        return out

    def postprocess(self, outputs, top_k=3, images=None):
        from r1.models.cls.family import classification_records
        return classification_records(outputs, self.meta, {"top_k": top_k})

    def warmup(self, runs=1, batch_sizes=(1,)):
        pass


class FakeLoader:
    """A picklable loader (it runs in the worker process): waits for `wait_file` to exist, fails
    with `fail` when set, else returns a FakePredictor(delay); `ballast_mb` of touched memory make its
    process slow to exit (a killed worker takes a while to free a large model)."""

    def __init__(self, delay: float = 0.0, wait_file: str | None = None, fail: str | None = None,
                 nan_width: int = 0, fail_file: str | None = None, ballast_mb: int = 0):
        self.delay, self.wait_file, self.fail, self.nan_width = delay, wait_file, fail, nan_width
        self.fail_file = fail_file  # fail once this file exists (a restart that cannot load)
        self.ballast_mb = ballast_mb

    def __call__(self, cfg):
        while self.wait_file and not os.path.exists(self.wait_file):
            time.sleep(0.02)
        if self.fail or (self.fail_file and os.path.exists(self.fail_file)):
            raise RuntimeError(self.fail or "weights vanished")
        p = FakePredictor(self.delay, self.nan_width)
        p.ballast = b"\1" * (self.ballast_mb << 20)
        return p


class FakeTextPredictor:
    """A text-in, text-out stand-in: prompt "boom" raises, "nan" returns a NaN score, "slow" runs
    for `slow_s` seconds checking `r1.cancel` (a long generation), anything else echoes."""

    family, runtime, inputs = "fake-lm", "fake", "text"

    def __init__(self, delay: float = 0.0, slow_s: float = 20.0):
        self.delay, self.slow_s = delay, slow_s

    def generate(self, text, max_new_tokens=64, temperature=0.8, top_k=0, top_p=1.0, seed=None, chat=None):
        from r1 import cancel

        time.sleep(self.delay)
        if text == "boom":
            raise RuntimeError("boom")
        if text == "slow":
            end = time.monotonic() + self.slow_s
            while time.monotonic() < end:
                cancel.check()
                time.sleep(0.01)
        rec = {"text": text[::-1], "prompt_tokens": len(text), "context_tokens": len(text),
               "generated_tokens": len(text), "finish_reason": "length", "seed": seed or 0}
        if text == "nan":
            rec["score"] = float("nan")
        return rec

    def warmup(self, runs=1, batch_sizes=(1,)):
        pass


class FakeTextLoader:
    """A picklable loader of FakeTextPredictor(delay, slow_s)."""

    def __init__(self, delay: float = 0.0, slow_s: float = 20.0):
        self.delay, self.slow_s = delay, slow_s

    def __call__(self, cfg):
        return FakeTextPredictor(self.delay, self.slow_s)


class FlakyPredictor(FakePredictor):
    """A FakePredictor whose forward raises when a batch holds an image `fail_width` pixels wide."""

    def __init__(self, delay: float = 0.0, fail_width: int = 7):
        super().__init__(delay)
        self.fail_width = fail_width

    def forward(self, batch):
        if (batch[:, 0, 0, 0] == self.fail_width).any():
            raise RuntimeError("canary bug")
        return super().forward(batch)


class VariantLoader:
    """A picklable loader for A/B tests: the variant's `cfg.model` picks the model: "flaky..." ->
    FlakyPredictor (raises on 7-pixel-wide images), "slow..." -> 50 ms per batch, "stall..." -> 1 s per
    batch, "nan..." -> NaN outputs on the warm-up's grey 8x8 image (it cannot load: its weights are broken),
    "text..." -> a text model (another family), else FakePredictor."""

    def __call__(self, cfg):
        name = os.path.basename(cfg.model)
        if name.startswith("flaky"):
            return FlakyPredictor()
        if name.startswith("nan"):
            return FakePredictor(nan_width=8)
        if name.startswith("text"):
            return FakeTextPredictor()
        return FakePredictor(0.05 if name.startswith("slow") else 1.0 if name.startswith("stall") else 0.0)


class FakeStreamPredictor:
    """A text model with `stream()` (as TextPredictor): the prompt reversed, one character per
    `step_s`; prompt "slow" streams for a long time (checking r1.cancel), "boom" raises."""

    family, runtime, inputs = "fake-lm", "fake", "text"

    def __init__(self, step_s: float = 0.0):
        self.step_s = step_s

    def encode(self, text, chat=None):
        return list(text)

    def stream(self, text, max_new_tokens=64, temperature=0.8, top_k=0, top_p=1.0, seed=None, chat=None):
        if text == "boom":
            raise RuntimeError("boom")
        out = ("z" * 10_000 if text == "slow" else text[::-1])[:max_new_tokens]
        for ch in out:
            time.sleep(self.step_s if text != "slow" else 0.01)
            yield {"text": ch}
        yield {"text": out, "prompt_tokens": len(text), "context_tokens": len(text), "generated_tokens": len(out),
               "finish_reason": "length", "seed": seed or 0, "done": True}

    def generate(self, text, max_new_tokens=64, temperature=0.8, top_k=0, top_p=1.0, seed=None, chat=None):
        *_, last = self.stream(text, max_new_tokens, temperature, top_k, top_p, seed, chat)
        return {k: v for k, v in last.items() if k != "done"}

    def warmup(self, runs=1, batch_sizes=(1,)):
        pass


class FakeStreamLoader:
    def __call__(self, cfg):
        return FakeStreamPredictor()
