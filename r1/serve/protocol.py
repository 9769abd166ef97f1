"""uvicorn's h11 protocol with a request-header deadline (slow-header clients, idle connections).

uvicorn times out idle keep-alive connections but not a client that connects and sends nothing, or
trickles its request headers a byte at a time: each such client holds a connection forever. Here a
connection must deliver a complete request head within `header_timeout_s` of connecting (or of its
first byte after a keep-alive pause), else it gets a 408 and is closed. The body has its own
deadline (`r1.serve.errors.BodyLimitMiddleware`).
"""
from __future__ import annotations

import asyncio
import json

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


def _timeout_response(seconds: float) -> bytes:
    body = json.dumps({"error": "header_timeout", "status": 408,
                       "detail": f"request headers not received within {seconds:g} s"}).encode()
    return (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


class HeaderTimeoutH11Protocol(H11Protocol):
    header_timeout_s = 10.0  # set by `with_header_timeout`

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._header_timer: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is h11.IDLE:  # part of a request head is buffered
            self._arm()
        else:
            self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._header_timer is None and not self.transport.is_closing():
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._expired)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _expired(self) -> None:
        self._header_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.write(_timeout_response(self.header_timeout_s))
            self.transport.close()


def with_header_timeout(seconds: float) -> type[HeaderTimeoutH11Protocol]:
    """The protocol class to give uvicorn (`uvicorn.Config(http=...)`)."""
    return type("R1H11Protocol", (HeaderTimeoutH11Protocol,), {"header_timeout_s": float(seconds)})
