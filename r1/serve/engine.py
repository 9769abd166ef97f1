"""One served model (a variant): its loader, inference process (or thread) and dynamic batcher.

    engine = Engine("canary", cfg_for_its_model, loader, metrics, on_change)
    await engine.load()                   # in the app's lifespan; ready, or load_error says why
    result = await engine.submit(task, timeout)      # ("ok", record) | ("error", status, code, detail)
                                                     # (every route submits here: the pixel budget holds)
    engine.listen(task.id, callback)      # streamed generation: callback(message) on the event loop
    await engine.close(loading)

A server holds one engine per variant (`r1 serve stable=RUN_A canary=RUN_B`); each has its own
batcher and worker, so a failing or slow variant never delays the others.

Memory: each engine has a `PixelBudget` of `serve.max_pixels_in_flight` decoded pixels (at least
`serve.max_pixels`): a task holds its input kind's `cost` (an image's pixels, read from its header)
from `submit` until its batch has run, so many large pictures wait their turn instead of being
decoded by the worker together, whichever route sent them.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import re
from typing import Callable

from r1.input_kinds import get_input_kind
from r1.serve.batcher import DynamicBatcher, PixelBudget, QueueFull
from r1.serve.supervisor import Supervisor
from r1.serve.worker import InferenceProcess, WorkerDied, describe, load_and_warm, run_tasks

log = logging.getLogger(__name__)


_ABS_PATH = re.compile(r"(?<![\w.~/-])/(?:[^\s/:'\"(),]+/)*([^\s/:'\"(),]+)")


def redact_paths(text: str) -> str:
    """Absolute paths -> their last part: errors that clients see never show the server's files."""
    return _ABS_PATH.sub(r"\1", text)


class Engine:
    def __init__(self, name: str, cfg, loader: Callable, metrics, on_change: Callable[[], None] = lambda: None,
                 on_depth: Callable[[], None] = lambda: None, on_loaded: Callable[[Engine], None] = lambda e: None,
                 on_failed: Callable[[Engine, str], None] = lambda e, why: None):
        self.name, self.cfg, self.loader, self.metrics = name, cfg, loader, metrics
        self.on_change = on_change  # readiness changed (the app recomputes /readyz and r1_ready)
        self.on_depth = on_depth  # its queue's depth changed (the app sums the variants' queues)
        self.on_loaded = on_loaded  # the model is up (first load or restart): the server checks it fits
        self.on_failed = on_failed  # it cannot serve (load failed, restarts given up, refused): roll back
        self.loaded_once = False
        self.budget = PixelBudget(max(getattr(cfg, "max_pixels_in_flight", 0), cfg.max_pixels))
        self.waiting = 0  # tasks waiting for the pixel budget: they count toward serve.max_queue too
        self.info: dict = {}
        self.supervisor: Supervisor | None = None
        self.cancelled: set[int] = set()  # inference="thread": ids of tasks whose caller gave up
        self.batcher: DynamicBatcher | None = None
        self.ready, self.load_error, self.load_seconds = False, None, None
        self.watcher: asyncio.Task | None = None
        self._listeners: dict[int, Callable[[dict], None]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def worker(self) -> InferenceProcess | None:
        return None if self.supervisor is None else self.supervisor.worker

    # ------------------------------------------------------------------ lifecycle
    def _down(self, reason: str) -> None:
        self.ready, self.load_error = False, redact_paths(reason)
        self.on_change()

    def _up(self, info: dict) -> None:
        self.info, self.load_error, self.ready = info, None, True
        self.on_change()
        self.on_loaded(self)

    def _gave_up(self, reason: str) -> None:
        self._down(reason)
        if self.supervisor is not None and self.supervisor.failed:
            self.on_failed(self, self.load_error)

    def refuse(self, why: str) -> None:
        """The server will not route to this variant (e.g. another family than the stable one's)."""
        self.ready, self.load_error = False, why
        self.on_change()
        self.on_failed(self, why)

    async def submit(self, task, timeout: float | None) -> tuple:
        """Queue `task` on this variant's batcher within `timeout` seconds, holding its cost in the pixel
        budget until its batch has run. QueueFull when the budget stays full, as the batcher's."""
        cost = get_input_kind(self.info.get("inputs", "image")).cost(task)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        if cost:
            self.waiting += 1
            try:
                cost = await asyncio.wait_for(self.budget.acquire(cost), timeout)
            except asyncio.TimeoutError:
                raise QueueFull(f"pixel budget full ({self.budget.limit} decoded pixels in flight)") from None
            finally:
                self.waiting -= 1
        left = None if timeout is None else max(0.001, timeout - (loop.time() - t0))
        release = (lambda: self.budget.release(cost)) if cost else None
        return await self.batcher.submit(task, timeout=left, on_done=release)

    def _run_in_thread(self, predictor, tasks: list) -> list[tuple]:
        try:
            return run_tasks(predictor, tasks, self.cfg, self.cancelled, emit=self._on_piece)
        finally:
            self.cancelled.difference_update(t.id for t in tasks)

    def _abandoned(self, task) -> None:
        """A task's caller timed out or went away while the task ran: stop it (generation)."""
        self.metrics.cancelled.inc()
        if self.supervisor is not None:
            self.supervisor.cancel(task.id)
        else:
            self.cancelled.add(task.id)

    def cancel(self, task) -> None:
        self._abandoned(task)

    def _on_batch(self, size: int, waits: list[float], seconds: float) -> None:
        self.metrics.batch_size.observe(size)
        self.metrics.variant_batch_size.labels(self.name).observe(size)
        self.metrics.inference_seconds.observe(seconds)
        for w in waits:
            self.metrics.queue_wait.observe(w)

    async def load(self) -> None:
        cfg = self.cfg
        self._loop = asyncio.get_running_loop()
        try:
            if cfg.inference == "process":
                self.supervisor = Supervisor(self.loader, cfg, self.metrics, on_up=self._up, on_down=self._gave_up,
                                             name=self.name)
                self.info = await self.supervisor.start()
                run_batch = functools.partial(self.supervisor.call, on_piece=self._on_piece)
            else:
                predictor, seconds = await asyncio.to_thread(load_and_warm, self.loader, cfg)
                self.info = describe(predictor, seconds)
                run_batch = functools.partial(self._run_in_thread, predictor)
        except Exception as err:  # reported by /readyz; the process stays up for /healthz
            log.error("variant %s: model load failed: %s: %s", self.name, type(err).__name__, str(err).splitlines()[0]
                      if str(err) else "")
            self.load_error = redact_paths(f"{type(err).__name__}: {err}")
            self.on_change()
            self.on_failed(self, self.load_error)
            return
        self.load_seconds = self.info["load_seconds"]
        self.batcher = DynamicBatcher(run_batch, cfg.max_batch, cfg.max_wait_ms, cfg.max_queue,
                                      on_batch=self._on_batch, on_depth=lambda _: self.on_depth(),
                                      on_abandon=self._abandoned, expected=(WorkerDied,))
        self.batcher.start()
        if self.supervisor is not None:
            self.watcher = asyncio.create_task(self.supervisor.watch(), name=f"r1-supervisor-{self.name}")
        self.metrics.model_load_seconds.set(self.load_seconds)
        self.ready = self.loaded_once = True
        self.on_change()
        log.info("ready: variant %s = %s (%s, inference in a %s) loaded and warmed in %.2fs", self.name,
                 cfg.model, cfg.runtime, cfg.inference, self.load_seconds)
        self.on_loaded(self)

    async def close(self, loading: bool) -> None:
        self.ready = False
        if self.watcher is not None:
            self.watcher.cancel()
        if self.batcher is not None:
            await self.batcher.close(drain=True)
        if self.supervisor is not None:  # after the drain: the worker finishes what it was given
            await self.supervisor.stop(0.0 if loading else 10.0)

    # ------------------------------------------------------------------ streaming
    def listen(self, task_id: int, callback: Callable[[dict], None] | None) -> None:
        """Deliver the streamed messages of task `task_id` to `callback` (None: stop)."""
        if callback is None:
            self._listeners.pop(task_id, None)
        else:
            self._listeners[task_id] = callback

    def _on_piece(self, task_id: int, message: dict) -> None:  # the batcher's inference thread
        self._loop.call_soon_threadsafe(self._deliver, task_id, message)

    def _deliver(self, task_id: int, message: dict) -> None:
        callback = self._listeners.get(task_id)
        if callback is not None:
            callback(message)
