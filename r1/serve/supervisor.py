"""Keeps the inference process alive: watches it (exit, heartbeat), restarts it with backoff.

    sup = Supervisor(loader, cfg, metrics, on_up=..., on_down=...)
    info = await sup.start()          # first start: LoadFailed / WorkerDied are not retried
    asyncio.create_task(sup.watch())  # every heartbeat_s: a dead or silent child is restarted
    sup.call(tasks)                   # from the batcher's thread; WorkerDied while it is down
    sup.failed                        # why it gave up (restart_limit failed restarts): /healthz 503

A child that exits, or stops beating for `stuck_after_s` (SIGSTOP, a hang in C code), is killed;
the requests it was running get 503 `worker_died`, new ones 503 `not_ready` until a new child is
warm. Restarts wait `restart_backoff_s`, doubled for each failed restart and for each death within
a minute of the previous start (a request that crashes the model must not spin), up to 30 s.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable

from r1.serve.worker import START_GRACE_S, InferenceProcess, LoadFailed, WorkerDied

log = logging.getLogger(__name__)

MAX_BACKOFF_S, STABLE_S = 30.0, 60.0


class Supervisor:
    def __init__(self, loader, cfg, metrics, on_up: Callable[[dict], None], on_down: Callable[[str], None],
                 name: str = ""):
        self.loader, self.cfg, self.metrics, self.name = loader, cfg, metrics, name
        self.on_up, self.on_down = on_up, on_down
        self.worker: InferenceProcess | None = None
        self.up = False
        self.failed: str | None = None
        self._restarting: asyncio.Task | None = None
        self._started_at = 0.0
        self._delay = cfg.restart_backoff_s

    async def start(self) -> dict:
        self._loop = asyncio.get_running_loop()
        self.worker = InferenceProcess(self.loader, self.cfg, self.name)
        # loading may hold the GIL for seconds (dlopen in `import torch`, an ONNX export): the
        # heartbeat is held to stuck_after_s once the child is warm, to START_GRACE_S until then
        info = await asyncio.to_thread(self.worker.wait_ready, max(self.cfg.stuck_after_s, START_GRACE_S))
        self.up, self._started_at = True, time.monotonic()
        return info

    def call(self, tasks: list, on_piece=None) -> list[tuple]:
        worker = self.worker
        if worker is None or not self.up:
            raise WorkerDied("inference process restarting")
        try:
            return worker.call(tasks, on_piece)
        except WorkerDied:  # restart now, not at the next heartbeat check
            self._loop.call_soon_threadsafe(self.check)
            raise

    def cancel(self, task_id: int) -> None:
        if self.worker is not None:
            self.worker.cancel(task_id)

    def check(self) -> None:
        """Look at the child now (also called by /readyz); start a restart if it is dead or stuck."""
        if not self.up or self.worker is None or self._restarting is not None:
            return
        problem = self.worker.problem(self.cfg.stuck_after_s)
        if problem:
            self.up = False
            self.on_down(f"inference process {problem}; restarting")
            log.error("inference process %s (pid %s); restarting it", problem, self.worker.pid)
            self._restarting = asyncio.get_running_loop().create_task(self._restart(problem))

    async def watch(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.heartbeat_s)
            self.check()

    async def _restart(self, problem: str) -> None:
        try:
            await asyncio.to_thread(self.worker.kill)
            if time.monotonic() - self._started_at > STABLE_S:
                self._delay = self.cfg.restart_backoff_s
            last = problem
            for _ in range(self.cfg.restart_limit):
                await asyncio.sleep(self._delay)
                self._delay = min(self._delay * 2, MAX_BACKOFF_S)
                self.metrics.worker_restarts.inc()
                try:
                    info = await self.start()
                except (LoadFailed, WorkerDied) as err:
                    last = f"restart failed: {err}"
                    log.error("inference process %s", last)
                    await asyncio.to_thread(self.worker.kill)
                    continue
                log.warning("inference process restarted (pid %s)", self.worker.pid)
                self.on_up(info)
                return
            self.failed = (f"inference process {problem}; not restarted ({self.cfg.restart_limit} attempts; "
                           f"last: {last})")
            log.error("%s; /healthz now answers 503", self.failed)
            self.on_down(self.failed)
        finally:
            self._restarting = None

    async def stop(self, timeout: float) -> None:
        if self._restarting is not None:
            self._restarting.cancel()
        if self.worker is not None:
            await asyncio.to_thread(self.worker.close, timeout)
