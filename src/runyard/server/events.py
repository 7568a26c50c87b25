"""Live updates as server-sent events.

A stream re-reads what changed from the store, so it sees every way data arrives (the server's own
ingest route, or a local agent writing the same database). It wakes when the ingest route says a
run changed, and otherwise looks every ``POLL_SECONDS``.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import orjson

from runyard import wire
from runyard.store.api import RunQuery

POLL_SECONDS = 0.5
KEEPALIVE_SECONDS = 15.0
#: Points sent per series per event; a burst beyond it is announced by count (clients refetch).
MAX_POINTS_PER_EVENT = 5_000
#: Streams open at once: each polls the store, and they share the server's threads with ingest.
MAX_STREAMS = 200
#: Streams one token (or the local user) may hold at once, so that one client cannot take them all.
MAX_STREAMS_PER_HOLDER = 50
#: Seconds a refused client is told to wait (``Retry-After``).
RETRY_AFTER_SECONDS = 5


class Hub:
    """Wakes the streams that watch a run or a project. Lives on the server's event loop."""

    def __init__(self) -> None:
        self._waiters: dict[str, set[asyncio.Event]] = defaultdict(set)
        self.loop: asyncio.AbstractEventLoop | None = None
        #: Streams admitted and not yet ended, in all and per holder (see ``admit``).
        self.streams = 0
        self._held: dict[str, int] = defaultdict(int)

    def publish(self, run_number: int | None, project: str | None) -> None:
        """Wake the streams of this run and project; callable from any thread."""
        loop = self.loop
        if loop is None:
            return  # nobody has subscribed yet
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._wake(run_number, project)
        else:
            loop.call_soon_threadsafe(self._wake, run_number, project)

    def _wake(self, run_number: int | None, project: str | None) -> None:
        for topic in (f"run:{run_number}", f"project:{project}", "project:*"):
            for event in list(self._waiters.get(topic, ())):
                event.set()

    def subscribe(self, topic: str) -> asyncio.Event:
        self.loop = asyncio.get_running_loop()
        event = asyncio.Event()
        self._waiters[topic].add(event)
        return event

    def unsubscribe(self, topic: str, event: asyncio.Event) -> None:
        self._waiters[topic].discard(event)


    def admit(self, holder: str) -> str | None:
        """Count a stream against the caps when its request is accepted (not once it starts: many
        requests accepted at once would all pass a check made later); None when admitted, else why not.
        Every admitted stream must be ended with ``release``, which ``counted`` does."""
        if self.streams >= MAX_STREAMS:
            return f"{MAX_STREAMS} live streams are open already; try again later"
        if self._held[holder] >= MAX_STREAMS_PER_HOLDER:
            return (f"this token holds {MAX_STREAMS_PER_HOLDER} live streams already (the most one token may); "
                    "close some, or try again later")
        self.streams += 1
        self._held[holder] += 1
        return None

    def release(self, holder: str) -> None:
        self.streams -= 1
        self._held[holder] -= 1
        if self._held[holder] <= 0:
            del self._held[holder]


def counted(hub: Hub, holder: str, stream: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The stream of an admitted request; its place is given back when it ends, or when it is
    dropped without ever starting (a client gone before the response began)."""
    released = False

    def release() -> None:
        nonlocal released
        if not released:
            released = True
            hub.release(holder)

    async def relay() -> AsyncIterator[bytes]:
        try:
            async for chunk in stream:
                yield chunk
        finally:
            release()

    body = relay()
    weakref.finalize(body, release)
    return body


def _run_frame(run: Any, hide: bool) -> bytes:
    data = wire.masked(wire.run_out(run))
    if hide:
        wire.hide_env(data)
    return frame("run", data)


def frame(kind: str, data: Any) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


async def _wait(event: asyncio.Event, timeout: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout)
    event.clear()


async def run_stream(store: Any, hub: Hub, number: int, disconnected: Callable[[], Any],
                     hide: bool = False) -> AsyncIterator[bytes]:
    """Metric points, log lines and status changes of one run, from the moment of connecting."""
    topic = f"run:{number}"
    wake = hub.subscribe(topic)
    try:
        run = await anyio.to_thread.run_sync(store.get_run, number)
        series = {s.key: s for s in await anyio.to_thread.run_sync(store.list_series, number)}
        tail = await anyio.to_thread.run_sync(store.tail_logs, number, 1)
        after = tail[-1].id if tail else 0
        status = (run.status, run.status_message, run.exit_code)
        yield _run_frame(run, hide)
        idle = 0.0
        while not await disconnected():
            changed = False
            now_series = await anyio.to_thread.run_sync(store.list_series, number)
            for info in now_series:
                old = series.get(info.key)
                if old is not None and old.count == info.count:
                    continue
                start = None if old is None or old.last_step is None else old.last_step + 1
                points = await anyio.to_thread.run_sync(store.history, number, info.key, start, None)
                series[info.key] = info
                if len(points) == 0:
                    continue
                changed = True
                if len(points) > MAX_POINTS_PER_EVENT:
                    yield frame("metric", {"key": info.key, "count": len(points), "truncated": True,
                                           "last_step": info.last_step})
                cut = slice(-MAX_POINTS_PER_EVENT, None)
                yield frame("metric", {"key": info.key, "step": points.steps[cut].tolist(),
                                       "time": points.times[cut].tolist(),
                                       "value": wire.plain(points.values[cut].tolist())})
            lines = await anyio.to_thread.run_sync(store.read_logs, number, after, 1000)
            if lines:
                changed = True
                after = lines[-1].id
                yield frame("log", [wire.plain_out(line) for line in lines])
            run = await anyio.to_thread.run_sync(store.get_run, number)
            if (run.status, run.status_message, run.exit_code) != status:
                status = (run.status, run.status_message, run.exit_code)
                changed = True
                yield _run_frame(run, hide)
            if changed:
                idle = 0.0
            else:
                idle += POLL_SECONDS
                if idle >= KEEPALIVE_SECONDS:
                    idle = 0.0
                    yield b": keep-alive\n\n"
            await _wait(wake, POLL_SECONDS)
    finally:
        hub.unsubscribe(topic, wake)


async def project_stream(store: Any, hub: Hub, project: str | None, disconnected: Callable[[], Any],
                         hide: bool = False) -> AsyncIterator[bytes]:
    """Runs of a project (or of all projects) that change state: created, started, ended, renamed."""
    topic = f"project:{project or '*'}"
    wake = hub.subscribe(topic)

    def snapshot() -> dict[int, Any]:
        page = store.list_runs(RunQuery(project=project, limit=500))
        return {r.number: r for r in page.items}

    def signature(r: Any) -> tuple[Any, ...]:
        return (r.status, r.name, r.labels, r.ended_at, r.status_message)

    try:
        known = await anyio.to_thread.run_sync(snapshot)
        yield b": connected\n\n"
        idle = 0.0
        while not await disconnected():
            await _wait(wake, POLL_SECONDS * 2)
            now = await anyio.to_thread.run_sync(snapshot)
            changed = [r for n, r in now.items() if n not in known or signature(known[n]) != signature(r)]
            known = now
            for r in sorted(changed, key=lambda r: r.number):
                yield _run_frame(r, hide)
            idle = 0.0 if changed else idle + POLL_SECONDS * 2
            if idle >= KEEPALIVE_SECONDS:
                idle = 0.0
                yield b": keep-alive\n\n"
    finally:
        hub.unsubscribe(topic, wake)
