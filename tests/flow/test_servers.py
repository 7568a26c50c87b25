"""Several `runyard server` processes on one PostgreSQL database (issue 15, "Several servers, one
database"): what one server ingests, a subscriber of another sees within a second, by LISTEN/NOTIFY.

Real server processes, a real shipping client, the real PostgreSQL server."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.flow.test_remote import script
from tests.unit.server.conftest import LiveServer, client_env, migrate_postgres

from runyard.store.engine import create_engine

pytestmark = [pytest.mark.timeout(240), pytest.mark.engines("postgresql")]


@pytest.fixture
def two_servers(db_url: str, tmp_path: Path) -> Iterator[tuple[LiveServer, LiveServer]]:
    migrate_postgres(db_url)
    servers = (LiveServer(tmp_path / "home-a", db_url), LiveServer(tmp_path / "home-b", db_url))
    try:
        for server in servers:
            server.start()
        yield servers
    finally:
        for server in servers:
            server.kill()


def _listeners(db_url: str, server: LiveServer) -> list[int]:
    """The backend process ids of ``server``'s listening connections (named by its process id)."""
    assert server.process is not None
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            return [int(pid) for pid in conn.exec_driver_sql(
                "SELECT pid FROM pg_stat_activity WHERE application_name = %(name)s",
                {"name": f"runyard-listen/{server.process.pid}"}).scalars()]
    finally:
        engine.dispose()


def _terminate(db_url: str, pid: int) -> None:
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql(f"SELECT pg_terminate_backend({pid})").scalar() is True
    finally:
        engine.dispose()


def test_a_point_ingested_through_one_server_reaches_a_subscriber_of_another_within_a_second(
        two_servers: tuple[LiveServer, LiveServer], db_url: str, tmp_path: Path) -> None:
    a, b = two_servers
    env = client_env(tmp_path / "laptop", a.url)  # the client ships to A only
    path = script(tmp_path, """
        import sys, time, runyard
        run = runyard.init(project="p", name="live")
        run.log({"t": time.time()}, step=0)
        for line in sys.stdin:          # one point per line the test sends
            run.log({"t": time.time()}, step=int(line))
        run.finish()
    """)
    child = subprocess.Popen([sys.executable, str(path)], env=env, cwd=tmp_path, stdin=subprocess.PIPE, text=True)
    before: list[float] = []
    after: list[float] = []
    killed: int | None = None
    try:
        deadline = time.monotonic() + 30
        while httpx.get(f"{b.url}/api/v1/runs/live").status_code == 404:  # B knows of it through the database
            assert time.monotonic() < deadline
            time.sleep(0.1)
        with httpx.stream("GET", f"{b.url}/api/v1/events", params={"run": "live"}, timeout=30) as events:
            assert child.stdin is not None
            kind = None
            sent = 0
            for line in events.iter_lines():
                if line.startswith("event: "):
                    kind = line[7:]
                    continue
                if not line.startswith("data: ") or kind not in ("run", "metric"):
                    continue
                if kind == "metric":
                    data = json.loads(line[6:])
                    now = time.time()
                    delays = [now - v for s, v in zip(data["step"], data["value"], strict=True) if s >= 1]
                    (before if killed is None else after).extend(delays)
                    if len(after) >= 5:
                        break
                    if len(before) >= 10 and killed is None:
                        # B's listening connection ends (a failover, an idle-connection killer): the
                        # next point is written while B may not be listening yet, and still arrives.
                        [killed] = _listeners(db_url, b)
                        _terminate(db_url, killed)
                elif sent:
                    continue  # a status frame: not a point
                sent += 1
                child.stdin.write(f"{sent}\n")
                child.stdin.flush()
        print(f"\ncross-server latency over {len(before)} points: p50 {statistics.median(before) * 1000:.0f} ms, "
              f"max {max(before) * 1000:.0f} ms; after B's listener was ended: p50 "
              f"{statistics.median(after) * 1000:.0f} ms, max {max(after) * 1000:.0f} ms")
        assert len(before) >= 10 and max(before) < 1.0, before
        assert len(after) >= 5 and max(after) < 1.0, after
        assert killed is not None and _listeners(db_url, b) not in ([], [killed])  # it listens again
    finally:
        if child.stdin:
            child.stdin.close()
        child.wait(60)
