"""Server fixtures: the app in-process (``api``), and a real server process (``live_server``)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from runyard.config import resolve
from runyard.server.app import create_app
from runyard.store.home import Opened, open_store
from runyard.store.migrate import upgrade

BASE = "http://127.0.0.1:8765"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Served:
    """The app in this process, on a store of one engine."""

    client: TestClient
    opened: Opened
    home: Path

    @property
    def store(self):  # type: ignore[no-untyped-def]
        return self.opened.store


def home_env(home: Path, db_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")}
    env.update({"RUNYARD_HOME": str(home), "RUNYARD_DB": db_url, "RUNYARD_SYSTEM_INTERVAL": "0"})
    return env


def migrate_postgres(db_url: str) -> None:
    """A PostgreSQL schema made for a test starts empty; a SQLite home is made on first use."""
    if db_url.startswith("postgresql"):
        from runyard.store.engine import create_engine

        engine = create_engine(db_url)
        upgrade(engine)
        engine.dispose()


@pytest.fixture
def api(db_url: str, tmp_path: Path) -> Iterator[Served]:
    # The routes' own behaviour, as the single user of an open loopback server; the security tests
    # create tokens (then every request needs one) or start servers that require them.
    with served_app(db_url, tmp_path, insecure_local=True) as served:
        yield served


@contextmanager
def served_app(db_url: str, tmp_path: Path, **options: Any) -> Iterator[Served]:
    """The app in this process on a fresh home of ``db_url``'s engine; ``options`` go to ``create_app``."""
    home = tmp_path / "server-home"
    settings = resolve(environ=home_env(home, db_url), cwd=tmp_path)
    migrate_postgres(db_url)
    opened = open_store(settings)
    try:
        app = create_app(settings, opened.store, opened.artifacts, "127.0.0.1", 8765, **options)
        with TestClient(app, base_url=BASE, raise_server_exceptions=False) as client:
            yield Served(client, opened, home)
    finally:
        opened.close()


@dataclass
class LiveServer:
    """``runyard server`` in a child process; ``restart()`` kills it and starts it again on the same port."""

    home: Path
    db_url: str
    port: int = field(default_factory=free_port)
    host: str = "127.0.0.1"
    #: --allow-host names (a server bound to every interface refuses to start without one).
    allow_hosts: tuple[str, ...] = ()
    #: Start with --insecure-local (on loopback only): the flow tests' clients live in other homes and
    #: send no token unless a test gives them one. Tests of the local credential set it False.
    insecure_local: bool = True
    #: More `runyard server` flags (--max-upload 64, ...).
    args: tuple[str, ...] = ()
    #: More environment of the server (and of the agent it starts): RUNYARD_RAY, ...
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    log: Path | None = None

    @property
    def url(self) -> str:
        # Bound to every interface, it is reached here over loopback (0.0.0.0 is no name it answers to).
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        self.log = self.home.parent / f"server-{self.port}.log"
        self.home.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            # The shell that starts a server may name another server: it must serve its own store anyway,
            # and the agents it starts for launched runs must run them, not ship them elsewhere.
            env = {**home_env(self.home, self.db_url), "RUNYARD_SERVER": "http://127.0.0.1:9",
                   "RUNYARD_TOKEN": "ry_not_for_this_server", **self.env}
            self.process = subprocess.Popen(
                [sys.executable, "-m", "runyard.cli.main", "server", "--host", self.host, "--port", str(self.port),
                 *(arg for name in self.allow_hosts for arg in ("--allow-host", name)),
                 *(["--insecure-local"] if self.insecure_local and self.host == "127.0.0.1" else []),
                 # The JupyterLab origin on a port known free, not the port + 1 that another test's may hold.
                 *([] if "--lab-port" in self.args else ["--lab-port", str(free_port())]), *self.args],
                env=env, stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/api/health", timeout=1.0).status_code in (200, 401):
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server did not start: {self.log.read_text()[-2000:]}")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        self.process = None

    def restart(self) -> None:
        self.kill()
        self.start()


@pytest.fixture
def live_server(db_url: str, tmp_path: Path) -> Iterator[LiveServer]:
    migrate_postgres(db_url)
    server = LiveServer(tmp_path / "server-home", db_url)
    server.start()
    yield server
    server.kill()


def client_env(home: Path, server_url: str, token: str | None = None) -> dict[str, str]:
    """Environment of a client machine: its own home, logging to the server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")}
    env.update({"RUNYARD_HOME": str(home), "RUNYARD_SERVER": server_url, "RUNYARD_SYSTEM_INTERVAL": "0"})
    if token:
        env["RUNYARD_TOKEN"] = token
    return env
