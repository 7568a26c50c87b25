"""The server's connections: uvicorn's h11 protocol with a header timeout, a minimum body rate and
a connection limit.

uvicorn closes an idle keep-alive connection (``timeout_keep_alive``), but a connection that has
sent part of a request's headers, or of its body, waits for the rest forever, and its
``limit_concurrency`` answers 503 without ``Retry-After``. ``GuardedH11Protocol`` closes a
connection whose headers are not all there ``header_timeout`` seconds after the connection opened
or the request's first byte came (with 408), closes one whose body arrives at less than
``min_body_rate`` bytes a second over a ``body_window`` (with 408 if no answer has begun; the time
the server itself stops reading, its buffer full, does not count), and answers every request on a
connection past ``max_connections`` with 503 and ``Retry-After``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
import orjson
import uvicorn
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.h11_impl import H11Protocol

from runyard.server.capacity import RETRY_AFTER_SECONDS, Limits

_TIMEOUT_RESPONSE = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


class _WatchedFlow(FlowControl):
    """uvicorn's flow control, noting that reading was paused (the app not keeping up) since last asked."""

    def __init__(self, transport: asyncio.Transport) -> None:
        super().__init__(transport)
        self.paused_lately = False

    def pause_reading(self) -> None:
        self.paused_lately = True
        super().pause_reading()


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, with ``limits`` (set on a subclass by ``protocol_for``)."""

    limits: Limits = Limits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._body_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.limits.max_connections:
            # Still read the request, so that the client gets an answer rather than a reset.
            self.app = _over_capacity
        super().connection_made(transport)
        self.flow = _WatchedFlow(transport)  # before any request: each takes the protocol's flow
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        self._cancel_body_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self._arm_header_timer()  # a request has begun (or the connection is new): its headers are due
        else:
            self._cancel_header_timer()
        if self.conn.their_state is h11.SEND_BODY and not self.transport.is_closing():
            self._body_bytes += len(data)
            if self._body_timer is None:  # a body has begun: it is due at the minimum rate
                self._body_bytes = 0
                self._body_timer = self.loop.call_later(self.limits.body_window, self._check_body_rate)

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

    def _cancel_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _check_body_rate(self) -> None:
        self._body_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.SEND_BODY:
            return  # the body is all there (or the connection gone)
        received, self._body_bytes = self._body_bytes, 0
        flow = self.flow
        paused = flow.read_paused or (isinstance(flow, _WatchedFlow) and flow.paused_lately)
        if isinstance(flow, _WatchedFlow):
            flow.paused_lately = False
        if paused or received >= self.limits.min_body_rate * self.limits.body_window:
            # Fast enough, or held back by the server itself (not reading: its buffer is full).
            self._body_timer = self.loop.call_later(self.limits.body_window, self._check_body_rate)
            return
        if self.conn.our_state is h11.SEND_RESPONSE:  # no answer begun: say why
            self.transport.write(_TIMEOUT_RESPONSE)
        self.transport.close()

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


#: The scope key that holds the peer as connected (host, port), before ``X-Forwarded-For`` from a
#: trusted proxy replaced the scope's ``client``: what a check of where a request comes from must use.
PEER = "runyard.peer"


class _PeerKept:
    """Keeps the connected peer under PEER, then hands the request to uvicorn's proxy-headers
    middleware (trusted hosts: ``FORWARDED_ALLOW_IPS``, default 127.0.0.1, as uvicorn's default), which
    may replace ``client`` with what a proxy on a trusted host says: any process on that host."""

    def __init__(self, app: Any) -> None:
        import os

        from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

        self.app = ProxyHeadersMiddleware(app, trusted_hosts=os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1"))

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            scope[PEER] = scope.get("client")
        await self.app(scope, receive, send)


def uvicorn_config(app: Any, host: str, port: int, limits: Limits) -> uvicorn.Config:
    """How ``runyard server`` runs ``app``: h11 with the guards above, the keep-alive timeout of ``limits``,
    the connected peer kept beside the one a proxy names (PEER).

    h11, not httptools: httptools drops a "#fragment" from the request target before the app can see
    it, so "a#/../x" would arrive as "a"; h11 hands the target over as sent, and the app refuses it."""
    return uvicorn.Config(_PeerKept(app), host=host, port=port, log_level="warning", access_log=False,
                          timeout_graceful_shutdown=2, server_header=False, http=protocol_for(limits),
                          timeout_keep_alive=limits.keep_alive, proxy_headers=False)
