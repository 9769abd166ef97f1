"""JSON errors and the pure-ASGI middlewares: the body size limit, request metrics, and the
direct route that serves the hot endpoint without FastAPI's per-request machinery."""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable

from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from r1.input_kinds.http import ApiError

log = logging.getLogger(__name__)

# The status counted in r1_requests_total for a request whose client went away before its answer
# (nginx's "client closed request"): its own outcome, neither a success nor a server error.
CLIENT_GONE = 499
ROUTES = ("/v1/predict", "/v1/completions", "/v1/variants", "/healthz", "/readyz", "/metrics", "/docs", "/openapi.json")


class BodyTooLarge(ApiError):
    def __init__(self, limit: int):
        super().__init__(413, "body_too_large", f"request body over the limit of {limit} bytes")


def error_response(status: int, code: str, detail: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail, "status": status}, status_code=status, headers=headers)


class BodyTimeout(ApiError):
    def __init__(self, seconds: float):
        super().__init__(408, "body_timeout", f"request body not received within {seconds:g} s",
                         {"connection": "close"})


class BodyLimitMiddleware:
    """431 when the request head's header names and values exceed `max_header_bytes` together; 413
    when Content-Length or the streamed body exceeds `max_bytes` (no full read first); 408 when the
    body has not fully arrived `timeout_s` after the request head (slow-body clients)."""

    def __init__(self, app, max_bytes: int, timeout_s: float | None = None, max_header_bytes: int = 16 << 10):
        self.app, self.max_bytes, self.timeout_s = app, max_bytes, timeout_s
        self.max_header_bytes = max_header_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        head = sum(len(k) + len(v) for k, v in scope["headers"]) + len(scope.get("query_string", b""))
        if head > self.max_header_bytes:
            return await error_response(431, "headers_too_large", f"request headers and query take {head} bytes; "
                                        f"at most {self.max_header_bytes}")(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None:
            try:
                too_big = int(length) > self.max_bytes
            except ValueError:
                return await error_response(400, "bad_request", "invalid Content-Length")(scope, receive, send)
            if too_big:
                err = BodyTooLarge(self.max_bytes)
                return await error_response(413, err.code, err.detail)(scope, receive, send)
        seen, done = 0, False
        deadline = None if self.timeout_s is None else asyncio.get_running_loop().time() + self.timeout_s

        async def limited_receive():
            nonlocal seen, done
            if done or deadline is None:  # after the body: waiting for a disconnect is not limited
                message = await receive()
            else:
                try:
                    async with asyncio.timeout_at(deadline):
                        message = await receive()
                except TimeoutError:  # raised inside the route: answered by the ApiError handler
                    raise BodyTimeout(self.timeout_s) from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                done = not message.get("more_body", False)
                if seen > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, limited_receive, send)


class MetricsMiddleware:
    """Counts every HTTP request by route and status, and times it."""

    def __init__(self, app, metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        route = path if path in ROUTES else "/v2" if path.startswith("/v2/") or path == "/v2" else "other"
        status = {"code": CLIENT_GONE}  # no response started: the client went away first
        t0 = time.perf_counter()

        async def send_status(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        except BaseException:
            if status["code"] == CLIENT_GONE:
                status["code"] = 500  # what uvicorn answers
            raise
        finally:
            self.metrics.requests.labels(route, str(status["code"])).inc()
            self.metrics.request_seconds.labels(route).observe(time.perf_counter() - t0)


class DirectRoute:
    """Sends `method path` straight to `handler(Request) -> Response`; everything else to `app`.

    FastAPI's routing, dependency solving and exception middleware cost a large share of the
    event loop's CPU per request at small models (with the access log, about half of ~0.8 ms);
    the same handler stays registered as a FastAPI route so that /docs and /openapi.json
    describe it. `ApiError`s become
    `on_error(err)`; anything else a 500 JSON body."""

    def __init__(self, app, path: str, method: str, handler: Callable[[Request], Awaitable[Response]],
                 on_error: Callable[[ApiError], Response]):
        self.app, self.path, self.method = app, path, method
        self.handler, self.on_error = handler, on_error

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != self.path or scope["method"] != self.method:
            return await self.app(scope, receive, send)
        try:
            response = await self.handler(Request(scope, receive))
        except ClientDisconnect:  # counted as CLIENT_GONE by MetricsMiddleware; nothing to answer
            log.debug("client disconnected before its answer (%s %s)", self.method, self.path)
            return
        except ApiError as err:
            response = self.on_error(err)
        except Exception as err:  # a bug, not the client's input
            log.exception("internal error on %s", self.path)
            response = error_response(500, "internal_error", f"{type(err).__name__} (see the server log)")
        await response(scope, receive, send)
