"""The live-event hub on PostgreSQL wakes streams for writes of other processes by LISTEN, not polling."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from runyard.server import events
from runyard.server.events import Hub
from runyard.store.api import RunPatch
from runyard.store.engine import create_engine
from runyard.store.newrun import NewRun
from runyard.store.series import Points
from runyard.store.sql import SqlStore
from runyard.types import RunStatus

pytestmark = pytest.mark.engines("postgresql")


async def _woken(event: asyncio.Event, timeout: float) -> float:
    """Seconds until ``event`` is set (it is cleared); fails after ``timeout``."""
    started = time.monotonic()
    await asyncio.wait_for(event.wait(), timeout)
    event.clear()
    return time.monotonic() - started


def test_streams_wake_for_another_process_writes_without_any_poll(store: SqlStore, db_url: str,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # Were the hub to poll, nothing would wake a stream within the hour.
    monkeypatch.setattr(events, "POLL_SECONDS", 3600.0)
    monkeypatch.setattr(events, "SAFETY_SECONDS", 3600.0)
    other = SqlStore(create_engine(db_url))  # another process's store: its own connections to the database
    run = store.create_run(NewRun(project="p", status=RunStatus.RUNNING))
    quiet = store.create_run(NewRun(project="q", status=RunStatus.RUNNING))

    async def main() -> None:
        hub = Hub(store)
        wake = hub.subscribe(f"run:{run.number}")
        untouched = hub.subscribe(f"run:{quiet.number}")
        project = hub.subscribe("project:p")
        await _woken(wake, 10)  # the listener connected: everything is read once
        await _woken(project, 10)
        assert hub.project_runs("p") is not None
        untouched.clear()
        listener = hub.listener
        assert listener is not None and listener.backend_pid is not None

        point = Points(np.array([0]), np.array([time.time()]), np.array([1.0]))
        await asyncio.to_thread(other.append_points, run.number, {"loss": point})
        assert await _woken(wake, 1.0) < 1.0
        assert not project.is_set() and not untouched.is_set()  # points change no listing, nor other runs

        await asyncio.to_thread(other.update_run, run.number, RunPatch(status=RunStatus.FINISHED))
        await _woken(project, 1.0)
        assert hub.project_runs("p")[run.number].status == RunStatus.FINISHED  # type: ignore[index]
        await _woken(wake, 1.0)
        assert hub.passes == 0  # no pass read every watched run's mark

        for topic, event in ((f"run:{run.number}", wake), (f"run:{quiet.number}", untouched),
                             ("project:p", project)):
            hub.unsubscribe(topic, event)
        await asyncio.sleep(0.2)
        assert hub.listener is None  # the last stream gone, the connection goes too
        await asyncio.to_thread(listener.join, 5)
        assert listener.backend_pid is None

    try:
        asyncio.run(main())
    finally:
        other.close()


def test_streams_opened_after_the_last_one_closed_are_woken_as_before(store: SqlStore, db_url: str,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # The listener of the streams that closed may still hear a write for a moment; what it heard must
    # not keep the next streams' listener from waking them (it did: until the 30 s safety pass).
    monkeypatch.setattr(events, "SAFETY_SECONDS", 3600.0)
    other = SqlStore(create_engine(db_url))
    run = store.create_run(NewRun(project="p", status=RunStatus.RUNNING))

    def point(step: int) -> dict[str, Points]:
        return {"loss": Points(np.array([step]), np.array([time.time()]), np.array([1.0]))}

    async def main() -> None:
        hub = Hub(store)
        for step in range(3):
            wake = hub.subscribe(f"run:{run.number}")
            await _woken(wake, 10)  # connected
            await asyncio.to_thread(other.append_points, run.number, point(2 * step))
            assert await _woken(wake, 1.0) < 1.0, f"streams opened the {step + 1}th time"
            hub.unsubscribe(f"run:{run.number}", wake)
            await asyncio.sleep(0.05)  # the watcher ends; its listener lingers for up to a second
            await asyncio.to_thread(other.append_points, run.number, point(2 * step + 1))
            await asyncio.sleep(0.3)

    try:
        asyncio.run(main())
    finally:
        other.close()
