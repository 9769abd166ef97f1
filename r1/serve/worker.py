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

log = logging.getLogger(__name__)


class LoadFailed(RuntimeError):
    """The child could not load or warm the model (the message says why)."""


class WorkerDied(RuntimeError):
    """The inference process is gone (crashed or killed)."""


def load_and_warm(loader, cfg):
    """-> (predictor, seconds) for `cfg`, warmed at every batch size the server will run."""
    t0 = time.perf_counter()
    p = loader(cfg)
    p.warmup(cfg.warmup_runs, tuple(sorted({1, cfg.max_batch})))
    return p, time.perf_counter() - t0


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
