"""The server's connections: uvicorn's h11 protocol with a header timeout and a connection limit.

uvicorn closes an idle keep-alive connection (``timeout_keep_alive``), but a connection that has
sent part of a request's headers waits for the rest forever, and its ``limit_concurrency`` answers
503 without ``Retry-After``. ``GuardedH11Protocol`` closes a connection whose headers are not all
there ``header_timeout`` seconds after the connection opened or the request's first byte came (with
408), and answers every request on a connection past ``max_connections`` with 503 and ``Retry-After``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
import orjson
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from runyard.server.capacity import RETRY_AFTER_SECONDS, Limits

_TIMEOUT_RESPONSE = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, with ``limits`` (set on a subclass by ``protocol_for``)."""

    limits: Limits = Limits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.limits.max_connections:
            # Still read the request, so that the client gets an answer rather than a reset.
            self.app = _over_capacity
        super().connection_made(transport)
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self._arm_header_timer()  # a request has begun (or the connection is new): its headers are due
        else:
            self._cancel_header_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # Between requests the keep-alive timeout holds (uvicorn's); the next request's first byte
        # arms the header timer again.
        self._cancel_header_timer()

    def _arm_header_timer(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.limits.header_timeout, self._headers_too_slow)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        if self.conn.our_state is h11.IDLE:
            self.transport.write(_TIMEOUT_RESPONSE)
        self.transport.close()


async def _over_capacity(scope: Any, receive: Any, send: Any) -> None:
    body = orjson.dumps({"error": "the server has as many connections open as it takes; try again later",
                         "status": 503})
    await send({"type": "http.response.start", "status": 503, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"retry-after", str(RETRY_AFTER_SECONDS).encode()), (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def protocol_for(limits: Limits) -> type[GuardedH11Protocol]:
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {"limits": limits})


def uvicorn_config(app: Any, host: str, port: int, limits: Limits) -> uvicorn.Config:
    """How ``runyard server`` runs ``app``: h11 with the guards above, the keep-alive timeout of ``limits``.

    h11, not httptools: httptools drops a "#fragment" from the request target before the app can see
    it, so "a#/../x" would arrive as "a"; h11 hands the target over as sent, and the app refuses it."""
    return uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                          timeout_graceful_shutdown=2, server_header=False, http=protocol_for(limits),
                          timeout_keep_alive=limits.keep_alive)
