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
