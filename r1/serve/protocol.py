"""uvicorn's HTTP protocol with a request-header deadline (slow-header clients, idle connections).

uvicorn times out idle keep-alive connections but not a client that connects and sends nothing, or
trickles its request headers a byte at a time: each such client holds a connection forever. Here a
connection must deliver a complete request head within `header_timeout_s` of connecting (or of its
first byte after a keep-alive pause), else it gets a 408 and is closed. The body has its own
deadline (`r1.serve.errors.BodyLimitMiddleware`). Both of uvicorn's HTTP/1.1 parsers are covered:
httptools (C, what `uvicorn[standard]` installs and uvicorn picks) and h11 (pure Python).
"""
from __future__ import annotations

import asyncio
import json


def _timeout_response(seconds: float) -> bytes:
    body = json.dumps({"error": "header_timeout", "status": 408,
                       "detail": f"request headers not received within {seconds:g} s"}).encode()
    return (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


class _HeaderDeadline:
    """Mixed into a uvicorn protocol class: `_arm()` when a request head is awaited, `_disarm()`
    once it is complete; `_awaiting_head()` says which (checked again when the timer fires)."""

    header_timeout_s = 10.0
    _header_timer: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        if self._header_timer is None and not self.transport.is_closing():
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._expired)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _expired(self) -> None:
        self._header_timer = None
        if self._awaiting_head() and not self.transport.is_closing():
            self.transport.write(_timeout_response(self.header_timeout_s))
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def _httptools_class():
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class R1HttpToolsProtocol(_HeaderDeadline, HttpToolsProtocol):
        _in_head = True

        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def on_message_begin(self) -> None:  # the first byte of a request
            super().on_message_begin()
            self._in_head = True
            self._arm()

        def on_headers_complete(self) -> None:
            self._in_head = False
            self._disarm()
            super().on_headers_complete()

        def _awaiting_head(self) -> bool:
            return self._in_head

    return R1HttpToolsProtocol


def _h11_class():
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class R1H11Protocol(_HeaderDeadline, H11Protocol):
        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self._awaiting_head():  # part of a request head is buffered
                self._arm()
            else:
                self._disarm()

        def _awaiting_head(self) -> bool:
            return self.conn.their_state is h11.IDLE

    return R1H11Protocol


def with_header_timeout(seconds: float, parser: str = "auto") -> type:
    """The protocol class to give uvicorn (`uvicorn.Config(http=...)`): httptools when installed
    (`parser="auto"`, as uvicorn chooses), else h11."""
    if parser == "auto":
        try:
            import httptools  # noqa: F401
            parser = "httptools"
        except ImportError:
            parser = "h11"
    base = _httptools_class() if parser == "httptools" else _h11_class()
    return type(base.__name__, (base,), {"header_timeout_s": float(seconds)})
