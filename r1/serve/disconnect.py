"""Awaiting work for a request that its client may abandon."""
from __future__ import annotations

import asyncio

from fastapi import Request
from starlette.requests import ClientDisconnect


async def unless_disconnected(request: Request, work):
    """Await `work` (e.g. the request's place in the batcher); if the client disconnects first, cancel
    it (dropped from the queue, or stopped in the worker) and raise ClientDisconnect."""
    job = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnect(request.receive))
    try:
        await asyncio.wait((job, gone), return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if not job.done():
        job.cancel()
        raise ClientDisconnect()
    return job.result()


async def _disconnect(receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
