"""A token is bound to the server it was created on (issue 14, item 3, last sentence).

Before sending a token, a client asks the server to prove it holds it; another server (here one that
relays every request to the right server, as one that wants the token would) cannot, and never sees
the token. A real ``runyard server`` and the real CLI."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.unit.server.conftest import LiveServer, client_env, home_env

from runyard.config import resolve
from runyard.store.home import open_store
from runyard.store.tokens import Tokens


def runyard(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "runyard.cli.main", *args], env=env, capture_output=True,
                          text=True, timeout=60, check=False)


class Relay:
    """Server B: passes every request on to server A (as A's own name) and remembers the headers."""

    def __init__(self, target: str) -> None:
        self.seen: list[tuple[str, str | None]] = []
        relay = self

        class Handler(BaseHTTPRequestHandler):
            def _relay(self) -> None:
                relay.seen.append((self.path, self.headers.get("authorization")))
                length = int(self.headers.get("content-length") or 0)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                answer = httpx.request(self.command, f"{target}{self.path}", headers=headers,
                                       content=self.rfile.read(length), timeout=10)
                self.send_response(answer.status_code)
                self.send_header("content-type", answer.headers.get("content-type", "application/json"))
                self.send_header("content-length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST = _relay  # http.server calls do_<METHOD>

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def relay(live_server: LiveServer) -> Iterator[Relay]:
    relay = Relay(live_server.url)
    yield relay
    relay.server.shutdown()


def test_a_token_made_for_server_a_is_not_sent_to_server_b(live_server: LiveServer, relay: Relay,
                                                          tmp_path: Path) -> None:
    opened = open_store(resolve(environ=home_env(live_server.home, live_server.db_url), cwd=tmp_path))
    try:
        made, secret = Tokens(opened.store).create("admin", "laptop")
    finally:
        opened.close()
    on_a = runyard(client_env(tmp_path / "laptop", live_server.url, secret), "ls")
    assert on_a.returncode == 0, on_a.stderr
    on_b = runyard(client_env(tmp_path / "laptop", relay.url, secret), "ls")
    assert on_b.returncode != 0 and "Traceback" not in on_b.stderr
    assert (f"not sending the token ry_{made.prefix}_… (from env RUNYARD_TOKEN) to {relay.url}: that server "
            "does not prove it holds it") in on_b.stderr
    assert relay.seen and all(auth is None for _, auth in relay.seen), relay.seen  # B never saw the token
    # `runyard status` takes another path to the server (the standard library's): bound as well.
    status = runyard(client_env(tmp_path / "laptop", relay.url, secret), "status")
    assert status.returncode != 0 and f"to {relay.url}: that server does not prove it holds it" in status.stderr
    assert all(auth is None for _, auth in relay.seen), relay.seen
