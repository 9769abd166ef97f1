"""DynamicBatcher unit tests: batches formed by size and by time, order kept, bounded queue,
timeouts, failures, and draining on close."""
from __future__ import annotations

import asyncio
import time

import pytest

from r1.serve.batcher import Closed, DynamicBatcher, QueueFull


def _run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


class Recorder:
    def __init__(self, delay: float = 0.0, fail_on=None):
        self.calls, self.delay, self.fail_on = [], delay, fail_on

    def __call__(self, items):
        self.calls.append(list(items))
        time.sleep(self.delay)
        if self.fail_on is not None and self.fail_on in items:
            raise ValueError("bad item")
        return [x * 10 for x in items]


def test_batches_by_size_and_order():
    fn = Recorder()

    async def main():
        b = DynamicBatcher(fn, max_batch=4, max_wait_ms=5000, max_queue=100)
        b.start()
        results = await asyncio.gather(*(b.submit(i) for i in range(8)))
        await b.close()
        return results

    t0 = time.perf_counter()
    assert _run(main()) == [i * 10 for i in range(8)]
    assert fn.calls == [[0, 1, 2, 3], [4, 5, 6, 7]]  # full batches run at once, in arrival order
    assert time.perf_counter() - t0 < 4.0  # did not wait for max_wait


def test_batches_by_time():
    fn = Recorder()

    async def main():
        b = DynamicBatcher(fn, max_batch=64, max_wait_ms=50, max_queue=100)
        b.start()
        t0 = time.perf_counter()
        results = await asyncio.gather(*(b.submit(i) for i in range(3)))
        waited = time.perf_counter() - t0
        late = await b.submit(99)  # alone: runs after max_wait, as a batch of one
        await b.close()
        return results, waited, late

    results, waited, late = _run(main())
    assert results == [0, 10, 20] and late == 990
    assert fn.calls == [[0, 1, 2], [99]]
    assert 0.045 <= waited < 2.0


def test_requests_arriving_during_inference_form_next_batch():
    fn = Recorder(delay=0.1)

    async def main():
        b = DynamicBatcher(fn, max_batch=8, max_wait_ms=1, max_queue=100)
        b.start()
        first = asyncio.ensure_future(b.submit(0))
        await asyncio.sleep(0.03)  # batch [0] is running
        rest = await asyncio.gather(*(b.submit(i) for i in range(1, 6)))
        await b.close()
        return [await first, *rest]

    assert _run(main()) == [0, 10, 20, 30, 40, 50]
    assert fn.calls == [[0], [1, 2, 3, 4, 5]]


def test_queue_full_raises_at_once():
    fn = Recorder(delay=0.3)

    async def main():
        b = DynamicBatcher(fn, max_batch=1, max_wait_ms=0, max_queue=2)
        b.start()
        running = asyncio.ensure_future(b.submit(0))
        await asyncio.sleep(0.05)  # item 0 is in the worker; the queue is empty
        queued = [asyncio.ensure_future(b.submit(i)) for i in (1, 2)]
        await asyncio.sleep(0)
        t0 = time.perf_counter()
        with pytest.raises(QueueFull):
            await b.submit(3)
        refused_in = time.perf_counter() - t0
        done = await asyncio.gather(running, *queued)
        await b.close()
        return done, refused_in

    done, refused_in = _run(main())
    assert done == [0, 10, 20] and refused_in < 0.05


def test_timeout_drops_request_and_keeps_serving():
    fn = Recorder(delay=0.2)

    async def main():
        b = DynamicBatcher(fn, max_batch=1, max_wait_ms=0, max_queue=10)
        b.start()
        first = asyncio.ensure_future(b.submit(0))
        await asyncio.sleep(0.02)
        with pytest.raises(asyncio.TimeoutError):
            await b.submit(1, timeout=0.05)  # still queued behind item 0 when it expires
        ok = await b.submit(2, timeout=5)
        await b.close()
        return await first, ok

    assert _run(main()) == (0, 20)
    assert [1] not in fn.calls  # the abandoned request never ran


def test_failure_fails_its_batch_only():
    fn = Recorder(fail_on=1)

    async def main():
        b = DynamicBatcher(fn, max_batch=2, max_wait_ms=20, max_queue=10)
        b.start()
        res = await asyncio.gather(b.submit(0), b.submit(1), return_exceptions=True)
        after = await b.submit(5)
        await b.close()
        return res, after

    res, after = _run(main())
    assert all(isinstance(r, ValueError) for r in res) and after == 50


def test_close_drains_in_flight_and_refuses_new():
    fn = Recorder(delay=0.05)

    async def main():
        b = DynamicBatcher(fn, max_batch=2, max_wait_ms=1000, max_queue=100)
        b.start()
        futs = [asyncio.ensure_future(b.submit(i)) for i in range(5)]
        await asyncio.sleep(0.01)
        await b.close(drain=True)
        with pytest.raises(Closed):
            await b.submit(9)
        return [f.result() for f in futs]

    assert _run(main()) == [0, 10, 20, 30, 40]


def test_invalid_settings():
    with pytest.raises(ValueError):
        DynamicBatcher(lambda x: x, max_batch=0)
