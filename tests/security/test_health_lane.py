"""The health check has a lane of its own (issue 14): its token check and its database check run on
threads no other request may take, so a server whose shared threads are all busy (here: requests
held inside the database) still says it is alive. How fast it answers under load is measured by
bench/abuse.py."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.security.servers import serving

from runyard.server.capacity import Limits
from runyard.store.sql import SqlStore

#: More requests than the shared thread pool has threads (anyio's default: 40).
HELD = 45


def test_health_answers_while_every_shared_thread_is_busy(db_url: str, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()
    entered = threading.Semaphore(0)
    counts = SqlStore.status_counts

    def held(self: SqlStore, *args: Any, **kwargs: Any) -> Any:
        entered.release()
        release.wait(60)
        return counts(self, *args, **kwargs)

    monkeypatch.setattr(SqlStore, "status_counts", held)
    with serving(tmp_path, Limits(max_connections=200), db_url) as port:
        url = f"http://127.0.0.1:{port}"
        answers: list[int] = []
        holders = [threading.Thread(target=lambda: answers.append(httpx.get(f"{url}/api/v1/status", timeout=90)
                                                                  .status_code)) for _ in range(HELD)]
        try:
            for t in holders:
                t.start()
            for _ in range(40):  # every shared thread holds a request
                assert entered.acquire(timeout=30)
            health = httpx.get(f"{url}/api/health", timeout=20)
            assert health.status_code == 200 and health.json()["status"] == "ok"
        finally:
            release.set()
            for t in holders:
                t.join(90)
        assert answers == [200] * HELD  # the held requests were answered too, once let go


def test_health_answers_while_an_upload_waits_for_the_disk(db_url: str, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # While the kernel writes back a lot of dirty pages it holds up the processes that write more:
    # an upload's write can wait for the disk. It must wait on its own, not on the event loop.
    import tempfile

    real = tempfile.NamedTemporaryFile
    writing = threading.Event()

    class StalledDisk:
        def __init__(self, f: Any) -> None:
            self.f = f

        def write(self, data: bytes) -> int:
            writing.set()
            time.sleep(1.5)
            return int(self.f.write(data))

        def __enter__(self) -> StalledDisk:
            self.f.__enter__()
            return self

        def __exit__(self, *exc: object) -> None:
            self.f.__exit__(*exc)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.f, name)

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", lambda *a, **k: StalledDisk(real(*a, **k)))
    with serving(tmp_path, Limits(), db_url) as port:
        url = f"http://127.0.0.1:{port}"
        content = b"x" * (3 << 20)
        import hashlib

        sha = hashlib.sha256(content).hexdigest()
        uploaded: list[int] = []
        upload = threading.Thread(target=lambda: uploaded.append(httpx.put(
            f"{url}/api/v1/blobs/{sha}", content=content, headers={"content-type": "application/octet-stream"},
            timeout=60).status_code))
        upload.start()
        try:
            assert writing.wait(30), "the upload never reached its file"
            started = time.monotonic()
            health = httpx.get(f"{url}/api/health", timeout=20)
            waited = time.monotonic() - started
            assert health.status_code == 200
            assert waited < 0.75, f"the health check waited {waited:.2f} s for an upload's write"
        finally:
            upload.join(60)
        assert uploaded == [200]


def test_with_its_watch_the_health_check_says_when_the_database_stops_answering_and_forgets_revoked_tokens(
        db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `runyard server` answers the health check from a watch whose thread asks the database every
    # second, and takes a token it has just accepted again for a few seconds, on that path only.
    from tests.unit.server.conftest import served_app

    from runyard.errors import StoreUnavailable
    from runyard.server import health_watch
    from runyard.store.tokens import Tokens

    monkeypatch.setattr(health_watch, "PING_EVERY", 0.05)
    monkeypatch.setattr(health_watch, "TOKEN_TTL", 0.5)
    with served_app(db_url, tmp_path) as served:
        tokens = Tokens(served.store)
        info, secret = tokens.create("reader", name="balancer")
        watch = served.client.app.state.server.health_watch  # type: ignore[attr-defined]
        down = threading.Event()
        answer = watch._ping

        def ping() -> object:
            if down.is_set():
                raise StoreUnavailable("cannot reach the database: connection refused")
            return answer()

        watch._ping = ping
        watch.start()
        try:
            auth = {"authorization": f"Bearer {secret}"}
            assert served.client.get("/api/health", headers=auth).status_code == 200
            down.set()  # the database stops answering: within a ping, the check says so
            deadline = time.monotonic() + 5
            while (got := served.client.get("/api/health", headers=auth)).status_code == 200:
                assert time.monotonic() < deadline, "the health check still says ok"
                time.sleep(0.02)
            assert got.status_code == 503 and "the database does not answer" in got.json()["error"]
            assert got.headers["retry-after"]
            down.clear()
            deadline = time.monotonic() + 5
            while served.client.get("/api/health", headers=auth).status_code != 200:
                assert time.monotonic() < deadline, "the health check did not recover"
                time.sleep(0.02)
            # Revoked: every other route refuses it at once; the health check once TOKEN_TTL passed.
            tokens.revoke(str(info.id))
            assert served.client.get("/api/v1/runs", headers=auth).status_code == 401
            time.sleep(0.6)
            assert served.client.get("/api/health", headers=auth).status_code == 401
        finally:
            watch.close()
