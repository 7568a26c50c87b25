"""Live-event streams are counted when accepted and capped per token (issue 14, item 6, in part).

A real server process on loopback; raw sockets, so that every request is on the wire before any
stream has started (the old count rose only once a stream started, so a burst got past the cap)."""

from __future__ import annotations

import socket
import time

from tests.security.servers import read_head
from tests.unit.server.conftest import LiveServer
from tests.unit.server.conftest import live_server as live_server

from runyard.server.events import MAX_STREAMS_PER_HOLDER, Hub


def _ask(server: LiveServer) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", server.port), timeout=20)
    s.sendall(f"GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n\r\n".encode())
    return s


def _head(s: socket.socket) -> str:
    return read_head(s).split(b"\r\n\r\n", 1)[0].decode("latin-1").lower()


def test_one_client_cannot_take_every_stream_and_is_told_when_to_retry(live_server: LiveServer) -> None:
    burst = [_ask(live_server) for _ in range(MAX_STREAMS_PER_HOLDER + 1)]  # all sent before any is answered
    try:
        heads = [_head(s) for s in burst]
        ok = [h for h in heads if h.startswith("http/1.1 200")]
        refused = [h for h in heads if h.startswith("http/1.1 503")]
        assert len(ok) == MAX_STREAMS_PER_HOLDER and len(refused) == 1, [h.splitlines()[0] for h in heads]
        assert "retry-after: 5" in refused[0]
        for s in burst[:10]:
            s.close()  # clients going away give their places back
        deadline = time.monotonic() + 20
        while True:
            again = _ask(live_server)
            head = _head(again)
            again.close()
            if head.startswith("http/1.1 200") or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert head.startswith("http/1.1 200"), head
    finally:
        for s in burst:
            s.close()


def test_a_stream_never_started_gives_its_place_back() -> None:
    import gc

    from runyard.server import events

    hub = Hub()
    assert hub.admit("token:1") is None and hub.streams == 1

    async def never() -> object:
        yield b""  # pragma: no cover - never iterated: the client left before the response began

    body = events.counted(hub, "token:1", never())  # type: ignore[arg-type]
    del body
    gc.collect()
    assert hub.streams == 0
    for _ in range(MAX_STREAMS_PER_HOLDER):
        assert hub.admit("token:1") is None
    assert "this token holds" in (hub.admit("token:1") or "")
    assert hub.admit("token:2") is None  # another client still gets in
