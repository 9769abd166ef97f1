"""Cooperative cancellation of long work (e.g. a generation whose HTTP caller timed out).

    with cancel.scope(lambda: request_id in cancelled):
        run()            # long loops call cancel.check() now and then

`check()` raises `Cancelled` when the innermost scope's test is true; outside any scope it costs a
thread-local lookup and never raises. Scopes are per thread.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Callable, Iterator

_local = threading.local()


class Cancelled(Exception):
    """The caller no longer wants the result."""


@contextmanager
def scope(is_cancelled: Callable[[], bool]) -> Iterator[None]:
    previous = getattr(_local, "test", None)
    _local.test = is_cancelled
    try:
        yield
    finally:
        _local.test = previous


def check() -> None:
    test = getattr(_local, "test", None)
    if test is not None and test():
        raise Cancelled("cancelled")
