"""Connections cannot be held open for nothing (issue 14, item 6).

A connection must send its headers within a timeout; connections past the limit are answered 503
with ``Retry-After``. Real servers on loopback, in a thread of the test with small limits."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import httpx
from tests.security.servers import serving

from runyard.server.capacity import Limits


def _stream(port: int, target: str, token: str) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n\r\n".encode())
    return s


def _head(s: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def _closed_within(s: socket.socket, seconds: float) -> tuple[float, bytes]:
    """Seconds until the server closed ``s``, and what it sent before."""
    started = time.monotonic()
    s.settimeout(seconds)
    data = b""
    try:
        while chunk := s.recv(4096):
            data += chunk
    except TimeoutError:
        raise AssertionError(f"still open after {seconds} s; received {data[:100]!r}") from None
    return time.monotonic() - started, data


def test_a_connection_that_sends_half_its_headers_is_closed(tmp_path: Path) -> None:
    with serving(tmp_path, Limits(header_timeout=1.0, keep_alive=5)) as port:
        half = socket.create_connection(("127.0.0.1", port))
        half.sendall(f"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n".encode())  # and no blank line
        took, data = _closed_within(half, 4)
        assert took < 2.5 and data.startswith(b"HTTP/1.1 408"), (took, data)
        silent = socket.create_connection(("127.0.0.1", port))  # connects, sends nothing
        took, _ = _closed_within(silent, 4)
        assert took < 2.5
        # After a whole request, the next one's headers are due as well (not the keep-alive's 5 s).
        reused = socket.create_connection(("127.0.0.1", port))
        reused.sendall(f"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        assert _head(reused).startswith(b"HTTP/1.1 200")
        time.sleep(0.2)
        reused.sendall(b"GET /api/health HTTP/1.1\r\n")
        took, _ = _closed_within(reused, 4)
        assert took < 2.5


def test_connections_past_the_limit_get_503_with_retry_after(tmp_path: Path) -> None:
    with serving(tmp_path, Limits(max_connections=10, header_timeout=10.0)) as port:
        held = [socket.create_connection(("127.0.0.1", port)) for _ in range(10)]
        time.sleep(0.3)
        refused = httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=5)
        assert refused.status_code == 503 and refused.headers["retry-after"] == "5", refused.text
        assert "connections" in refused.json()["error"]
        for s in held:
            s.close()
        time.sleep(0.3)
        assert httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=5).status_code == 200
