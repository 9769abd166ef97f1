"""The model in its own process, so that inference and the event loop never share a GIL.

    w = InferenceProcess(loader, cfg)        # spawns; the child loads and warms the model
    info = w.wait_ready()                    # {"family", "inputs", "runtime", "load_seconds"}; LoadFailed
    results = w.call([task, ...])            # run_tasks in the child; WorkerDied if it is gone
    w.close()

One pipe, one batch in flight: `call` is made from the batcher's single inference thread. Tasks
travel as encoded bytes (smaller than decoded pixels); the child decodes, preprocesses, runs and
post-processes, and sends back JSON-safe records. The child ignores SIGINT: Ctrl-C reaches the
whole process group, and the server, not the child, decides when to stop (after draining).
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import signal
import time

from r1.errors import NonFiniteOutput
from r1.serve.work import is_finite

log = logging.getLogger(__name__)


class LoadFailed(RuntimeError):
    """The child could not load or warm the model (the message says why)."""


class WorkerDied(RuntimeError):
    """The inference process is gone (crashed or killed)."""


def load_and_warm(loader, cfg):
    """-> (predictor, seconds) for `cfg`, warmed at every batch size the server will run and
    checked to answer with finite numbers (NonFiniteOutput: the server stays not ready, with why).
    `warmup_runs` 0 skips both (tests)."""
    t0 = time.perf_counter()
    p = loader(cfg)
    if cfg.warmup_runs > 0:
        p.warmup(cfg.warmup_runs, tuple(sorted({1, cfg.max_batch})))
        check_finite(p, cfg)
    return p, time.perf_counter() - t0


def _finite(value) -> bool:
    """No NaN/inf in tensors, arrays, numbers, or lists/dicts of them."""
    import numpy as np
    import torch

    if isinstance(value, torch.Tensor):
        return not value.is_floating_point() or bool(torch.isfinite(value).all())
    if isinstance(value, np.ndarray):
        return value.dtype.kind not in "fc" or bool(np.isfinite(value).all())
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(_finite(v) for v in value)
    return is_finite(value)


def check_finite(predictor, cfg) -> None:
    """Image models: a mid-grey image through preprocess, forward and postprocess must stay finite
    (NaN weights, a preprocessing std of 0). Text models check their logits as they sample
    (`r1.lm.generate.sample_next`), so their warm-up has raised already."""
    if predictor.inputs != "image":
        return
    from PIL import Image

    _, h, w = predictor.input_shape
    image = Image.new("RGB", (w, h), (128, 128, 128))
    batch = predictor.preprocess([image])
    if not _finite(batch):
        raise NonFiniteOutput("preprocessing gives non-finite values (NaN/inf): is a preprocess std 0 in "
                              "model.json?")
    outputs = predictor.forward(batch)
    if not _finite(outputs) or not _finite(predictor.postprocess(outputs, top_k=cfg.top_k, images=[image])):
        raise NonFiniteOutput("the model's outputs are not finite (NaN/inf) on a plain grey image: its weights "
                              "are broken")


def describe(predictor, seconds: float) -> dict:
    return {"family": predictor.family, "inputs": predictor.inputs, "runtime": predictor.runtime,
            "load_seconds": seconds}


def _child_main(conn, loader, cfg) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s inference: %(message)s")
    import torch

    from r1.serve.work import run_tasks

    torch.set_num_threads(cfg.threads)
    try:
        predictor, seconds = load_and_warm(loader, cfg)
    except BaseException as err:  # reported to the parent, which answers /readyz with it
        conn.send(("failed", f"{type(err).__name__}: {err}"))
        return
    conn.send(("ready", describe(predictor, seconds)))
    while True:
        try:
            tasks = conn.recv()
        except (EOFError, OSError):  # the server went away
            return
        if tasks is None:
            return
        try:
            conn.send(("ok", run_tasks(predictor, tasks, cfg.max_pixels)))
        except Exception as err:
            logging.getLogger(__name__).exception("batch of %d failed", len(tasks))
            conn.send(("error", f"{type(err).__name__}: {err}"))


class InferenceProcess:
    """A spawned child running `run_tasks` on batches sent by `call`. `loader` must be picklable
    (a module-level function or an instance of a module-level class)."""

    def __init__(self, loader, cfg):
        ctx = mp.get_context("spawn")  # fork would copy the server's threads and locks
        self._conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_child_main, args=(child, loader, cfg), name="r1-inference", daemon=True)
        self.proc.start()
        child.close()

    @property
    def pid(self) -> int | None:
        return self.proc.pid

    def _died(self) -> WorkerDied:
        self.proc.join(timeout=1)
        return WorkerDied(f"inference process exited (exit code {self.proc.exitcode})")

    def wait_ready(self) -> dict:
        try:
            kind, payload = self._conn.recv()
        except (EOFError, OSError):
            raise self._died() from None
        if kind == "failed":
            raise LoadFailed(payload)
        return payload

    def call(self, tasks: list) -> list[tuple]:
        try:
            self._conn.send(tasks)
            kind, payload = self._conn.recv()
        except (EOFError, OSError):
            raise self._died() from None
        if kind == "error":
            raise RuntimeError(f"inference failed: {payload}")
        return payload

    def close(self, timeout: float = 10.0) -> None:
        """Ask the child to stop (after the batch it is running); terminate it after `timeout`."""
        if self.proc.is_alive():
            try:
                self._conn.send(None)
            except OSError:
                pass
            self.proc.join(timeout)
        if self.proc.is_alive():
            log.warning("inference process did not stop in %.0fs; terminating", timeout)
            self.proc.terminate()
            self.proc.join(5)
        self._conn.close()
