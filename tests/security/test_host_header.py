"""A server bound to every interface answers only to the names it is told (--allow-host) and loopback.

Real ``runyard server`` processes on 0.0.0.0 and a free port."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
from tests.unit.server.conftest import LiveServer, free_port, home_env, migrate_postgres

from runyard.config import resolve
from runyard.store.home import open_store
from runyard.store.tokens import Tokens


def bearer(secret: str) -> dict[str, str]:
    return {"authorization": f"Bearer {secret}"}


def test_a_server_on_every_interface_without_allow_host_refuses_to_start(db_url: str, tmp_path: Path) -> None:
    home = tmp_path / "server-home"
    env = home_env(home, db_url)
    migrate_postgres(db_url)
    opened = open_store(resolve(environ=env, cwd=tmp_path))
    try:
        Tokens(opened.store).create("admin", "me")  # the token is there: only the name is missing
    finally:
        opened.close()
    for host in ("0.0.0.0", "::"):
        refused = subprocess.run([sys.executable, "-m", "runyard.cli.main", "server", "--host", host,
                                  "--port", str(free_port())], env=env, capture_output=True, timeout=30, check=False)
        said = refused.stderr.decode()
        assert refused.returncode == 2, said
        assert "--allow-host NAME" in said and "Traceback" not in said


def test_a_server_on_every_interface_answers_only_to_its_allowed_name(db_url: str, tmp_path: Path) -> None:
    home = tmp_path / "server-home"
    migrate_postgres(db_url)
    opened = open_store(resolve(environ=home_env(home, db_url), cwd=tmp_path))
    try:
        _, secret = Tokens(opened.store).create("admin", "me")
    finally:
        opened.close()
    server = LiveServer(home, db_url, host="0.0.0.0", allow_hosts=("example.test",))
    server.start()
    try:
        url = f"http://127.0.0.1:{server.port}/api/v1/runs"
        for host in ("evil.test", f"evil.test:{server.port}", f"example.test.evil.test:{server.port}",
                     f"0.0.0.0:{server.port}"):
            refused = httpx.get(url, headers={**bearer(secret), "host": host}, timeout=5)
            assert refused.status_code == 400, (host, refused.status_code)
            assert "Host header" in refused.json()["error"]
        for host in (f"example.test:{server.port}", "example.test", f"EXAMPLE.test:{server.port}",
                     f"127.0.0.1:{server.port}", f"localhost:{server.port}"):
            ok = httpx.get(url, headers={**bearer(secret), "host": host}, timeout=5)
            assert ok.status_code == 200, (host, ok.status_code, ok.text)
    finally:
        server.kill()
