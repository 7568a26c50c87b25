"""A real server in a thread of the test process, with the limits a test chooses (small ones, so
that a test reaches them in a moment): uvicorn with runyard's connection guards, on loopback."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import uvicorn
from tests.unit.server.conftest import free_port, home_env, migrate_postgres

from runyard.config import resolve
from runyard.server.app import create_app
from runyard.server.capacity import Limits
from runyard.server.connections import uvicorn_config
from runyard.store.home import open_store


@contextmanager
def serving(tmp_path: Path, limits: Limits, db_url: str) -> Iterator[int]:
    """The port of a server on a fresh home with the database ``db_url``, stopped on exit."""
    home = tmp_path / "tuned-home"
    migrate_postgres(db_url)
    settings = resolve(environ=home_env(home, db_url), cwd=tmp_path)
    opened = open_store(settings)
    port = free_port()
    app = create_app(settings, opened.store, opened.artifacts, "127.0.0.1", port, limits=limits, insecure_local=True)
    server = uvicorn.Server(uvicorn_config(app, "127.0.0.1", port, limits))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(10)
        opened.close()


def read_head(s: socket.socket) -> bytes:
    """What a raw HTTP connection received up to the end of the response's headers (or its close)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def read_until(s: socket.socket, needle: bytes, seconds: float = 5.0) -> bytes:
    """What a stream sends until ``needle`` arrives, ``seconds`` pass, or it closes."""
    s.settimeout(seconds)
    seen = b""
    deadline = time.monotonic() + seconds
    while needle not in seen and time.monotonic() < deadline:
        chunk = s.recv(65536)
        if not chunk:  # closed: nothing more will come
            break
        seen += chunk
    return seen
