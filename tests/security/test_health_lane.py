"""The health check has a lane of its own (issue 14): its token check and its database check run on
threads no other request may take, so a server whose shared threads are all busy (here: requests
held inside the database) still says it is alive. How fast it answers under load is measured by
bench/abuse.py."""

from __future__ import annotations

import threading
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
    import time

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
