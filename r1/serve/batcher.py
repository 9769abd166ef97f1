"""Dynamic batching on asyncio: requests queue up; a batch runs when `max_batch` items are waiting
or `max_wait_ms` has passed since the oldest arrived. Inference runs in one worker thread, off the
event loop, one batch at a time; requests arriving meanwhile form the next batch.

The queue is bounded: `submit` raises `QueueFull` at once when `max_queue` items are waiting.
A request whose caller stopped waiting (timeout, disconnect) is dropped before it is batched.
`submit(..., on_done=f)` calls `f()` once the item leaves the batcher for good: its batch finished
(even when its caller stopped waiting meanwhile), or it was dropped unrun. `PixelBudget` uses that
to bound what a worker holds decoded (r1/serve/engine.py).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

log = logging.getLogger(__name__)


class QueueFull(Exception):
    """The queue holds `max_queue` requests; retry later."""


class Closed(Exception):
    """The batcher is shutting down and accepts no new requests."""


@dataclass
class _Item:
    payload: Any
    future: asyncio.Future
    enqueued: float
    running: bool = False
    on_done: Callable[[], None] | None = None

    def done(self) -> None:
        """The item left the batcher (ran, or dropped unrun): call `on_done` once."""
        if self.on_done is not None:
            callback, self.on_done = self.on_done, None
            callback()


class PixelBudget:
    """Decoded pixels (or tensor elements) in flight on one worker, at most `limit` together; one task
    larger than the limit runs alone. `acquire` waits in arrival order (a large image is not starved by
    small ones); `release` wakes the next waiters that fit."""

    def __init__(self, limit: int):
        self.limit, self.used = max(1, int(limit)), 0
        self._waiting: deque[tuple[int, asyncio.Future]] = deque()

    async def acquire(self, cost: int) -> int:
        """Wait until `cost` fits; -> what was taken (release exactly that). Cancellable."""
        cost = min(max(0, int(cost)), self.limit)
        if not self._waiting and self.used + cost <= self.limit:
            self.used += cost
            return cost
        fut = asyncio.get_running_loop().create_future()
        entry = (cost, fut)
        self._waiting.append(entry)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():  # granted as it was cancelled: give it back
                self.release(cost)
            elif entry in self._waiting:
                self._waiting.remove(entry)
                self._wake()
            raise
        return cost

    def release(self, cost: int) -> None:
        self.used -= cost
        self._wake()

    def _wake(self) -> None:
        while self._waiting and self.used + self._waiting[0][0] <= self.limit:
            cost, fut = self._waiting.popleft()
            if not fut.done():
                self.used += cost
                fut.set_result(None)


class DynamicBatcher:
    """`await batcher.submit(x)` -> `fn([..., x, ...])[i]`, with `fn(list) -> list` of the same length.

    `on_batch(size, queue_waits_s, seconds)` and `on_depth(n)` are metric callbacks;
    `on_abandon(payload)` is called for an item whose caller stopped waiting (timeout, cancel)
    while it was running, so that the work can be stopped. Errors of the `expected` types fail
    their batch with a one-line log (no traceback).
    """

    def __init__(self, fn: Callable[[list], list], max_batch: int = 32, max_wait_ms: float = 5.0,
                 max_queue: int = 256, on_batch: Callable | None = None, on_depth: Callable | None = None,
                 on_abandon: Callable | None = None, expected: tuple[type[BaseException], ...] = ()):
        if max_batch < 1 or max_queue < 1 or max_wait_ms < 0:
            raise ValueError("max_batch and max_queue must be >= 1 and max_wait_ms >= 0")
        self.fn, self.max_batch, self.max_wait = fn, max_batch, max_wait_ms / 1000.0
        self.max_queue = max_queue
        self.on_batch, self.on_depth, self.on_abandon = on_batch, on_depth, on_abandon
        self.expected = expected  # errors logged in one line (e.g. the worker died): no traceback
        self._queue: deque[_Item] = deque()
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="r1-infer")
        self._closing = False
        self.in_flight = 0  # items handed to the worker thread
        self.batches_run = 0

    @property
    def depth(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        self._wakeup = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="r1-batcher")

    async def submit(self, payload: Any, timeout: float | None = None, on_done: Callable[[], None] | None = None) -> Any:
        """Queue one request and wait for its result. Raises QueueFull, Closed, asyncio.TimeoutError.
        `on_done()` is called once the item leaves the batcher (also when this raises)."""
        if self._closing or self._task is None:
            if on_done is not None:
                on_done()
            raise Closed("server is shutting down")
        if len(self._queue) >= self.max_queue:
            if on_done is not None:
                on_done()
            raise QueueFull(f"queue full ({self.max_queue} waiting)")
        fut = asyncio.get_running_loop().create_future()
        item = _Item(payload, fut, time.perf_counter(), on_done=on_done)
        self._queue.append(item)
        self._depth_changed()
        self._wakeup.set()
        # wait_for cancels `fut` on timeout; the worker skips cancelled items, a running one is abandoned
        try:
            return await asyncio.wait_for(fut, timeout)
        except (asyncio.TimeoutError, asyncio.CancelledError):
            if item.running and self.on_abandon is not None:
                self.on_abandon(payload)
            raise

    def _depth_changed(self) -> None:
        if self.on_depth is not None:
            self.on_depth(len(self._queue))

    def _drop_abandoned(self) -> None:
        while self._queue and self._queue[0].future.done():
            self._queue.popleft().done()

    async def _next_batch(self) -> list[_Item]:
        """Wait for a first item, then until the batch is full or the oldest item's deadline."""
        while True:
            self._drop_abandoned()
            if self._queue:
                break
            if self._closing:
                return []
            self._wakeup.clear()
            await self._wakeup.wait()
        deadline = self._queue[0].enqueued + self.max_wait
        while len(self._queue) < self.max_batch and not self._closing:
            left = deadline - time.perf_counter()
            if left <= 0:
                break
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), left)
            except asyncio.TimeoutError:
                break
        batch = []
        while self._queue and len(batch) < self.max_batch:
            item = self._queue.popleft()
            if not item.future.done():
                batch.append(item)
            else:
                item.done()
        self._depth_changed()
        return batch

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            if not batch:
                if self._closing and not self._queue:
                    return
                continue
            start = time.perf_counter()
            waits = [start - it.enqueued for it in batch]
            for it in batch:
                it.running = True
            self.in_flight = len(batch)
            try:
                results = await loop.run_in_executor(self._executor, self.fn, [it.payload for it in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"batch function returned {len(results)} results for {len(batch)} inputs")
            except Exception as err:  # one bad batch fails its requests, not the server
                if isinstance(err, self.expected):
                    log.warning("batch of %d failed: %s", len(batch), err)
                else:
                    log.exception("batch of %d failed", len(batch))
                for it in batch:
                    if not it.future.done():
                        it.future.set_exception(err)
            else:
                for it, res in zip(batch, results):
                    if not it.future.done():
                        it.future.set_result(res)
            finally:
                self.in_flight = 0
                self.batches_run += 1
                for it in batch:
                    it.done()
            if self.on_batch is not None:
                self.on_batch(len(batch), waits, time.perf_counter() - start)

    async def close(self, drain: bool = True, timeout: float = 30.0) -> None:
        """Stop accepting; with `drain`, finish every queued and running request first."""
        self._closing = True
        if self._task is None:
            self._executor.shutdown(wait=False)
            return
        if not drain:
            for it in self._queue:
                it.future.cancel()
                it.done()
            self._queue.clear()
        self._wakeup.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except asyncio.TimeoutError:
            log.warning("batcher did not drain in %.0fs; cancelling", timeout)
            self._task.cancel()
        self._executor.shutdown(wait=True)
