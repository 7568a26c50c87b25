"""Live updates as server-sent events.

A stream re-reads what changed from the store, so it sees every way data arrives (the server's own
ingest route, another server on the same database, or a local agent writing to it). Streams do not
poll: one watcher per server (``Hub``) learns what changed for all of them and wakes only the streams
whose run or project changed; the ingest route wakes them at once. How the watcher learns it:

- PostgreSQL: every write tells what it changed by NOTIFY when it commits (``store/notify.py``); the
  watcher LISTENs on one connection of its own, so a point ingested through another server wakes
  the streams here within milliseconds, with no query while nothing changes.
- SQLite (one machine): every ``POLL_SECONDS``, a mark of each watched run and the latest runs of
  each watched project, whatever the number of streams.

An idle stream costs a keep-alive comment every ``KEEPALIVE_SECONDS`` and nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import orjson

from runyard import wire
from runyard.server.capacity import RETRY_AFTER_SECONDS as RETRY_AFTER_SECONDS
from runyard.store.api import RunQuery
from runyard.store.notify import EVERYTHING, Change, Listener

POLL_SECONDS = 0.5
#: PostgreSQL: seconds between passes of the watcher that nothing asked for. Every runyard writer
#: of this version NOTIFYs, and a lost listening connection is made good by waking everything on
#: reconnecting; this slow pass is for a writer that does not: an agent of an older runyard still
#: writing to the database during an upgrade. It costs three queries per 30 s per server.
SAFETY_SECONDS = 30.0
#: PostgreSQL: the least time between two reads of the watched projects' runs, so that a burst of
#: runs changing state costs a few reads a second, not one per change. (Run streams are woken at once:
#: a woken stream reads what changed since its last read, so many wakes during one read are one.)
COALESCE_SECONDS = 0.05
KEEPALIVE_SECONDS = 15.0
#: Points sent per series per event; a burst beyond it is announced by count (clients refetch).
MAX_POINTS_PER_EVENT = 5_000
#: Streams open at once: each costs a connection and a catch-up read when its run changes.
MAX_STREAMS = 200
#: Streams one token (or the local user) may hold at once, so that one client cannot take them all.
MAX_STREAMS_PER_HOLDER = 50
#: Runs of a project a project stream watches (the latest).
PROJECT_RUNS = 500
#: Threads the streams' reads may take at once, of the server's pool (40) that every route shares:
#: 200 streams catching up together would otherwise keep a health check waiting for a thread.
STREAM_THREADS = 8


def _signature(r: Any) -> tuple[Any, ...]:
    """What a project stream tells about a run: a change of any of these is sent."""
    return (r.status, r.name, r.labels, r.ended_at, r.status_message)


def _signatures(runs: dict[int, Any]) -> dict[int, tuple[Any, ...]]:
    return {n: _signature(r) for n, r in runs.items()}


class Hub:
    """Wakes the streams that watch a run or a project. Lives on the server's event loop.

    With a store, one watcher task (started by the first subscriber, ended with the last) reads
    what changed for all streams at once and wakes those concerned (see the module's docstring)."""

    def __init__(self, store: Any = None) -> None:
        self.store = store
        self._waiters: dict[str, set[asyncio.Event]] = defaultdict(set)
        self.loop: asyncio.AbstractEventLoop | None = None
        #: Streams admitted and not yet ended, in all and per holder (see ``admit``).
        self.streams = 0
        self._held: dict[str, int] = defaultdict(int)
        self._watcher: asyncio.Task[None] | None = None
        #: The last mark of each watched run (``store.activity``), and the latest runs of each watched
        #: project (None: all projects) with their signatures.
        self._marks: dict[int, tuple[Any, ...]] = {}
        self._projects: dict[str | None, dict[int, Any]] = {}
        #: Passes of the watcher that read every watched run's mark so far (polls on SQLite, the
        #: safety passes on PostgreSQL).
        self.passes = 0
        self._limiter: anyio.CapacityLimiter | None = None
        #: PostgreSQL: the listening thread while the watcher runs, what it heard and the watcher
        #: has not handled yet (guarded by ``_lock``), and the event that wakes the watcher.
        self.listener: Listener | None = None
        self._lock = threading.Lock()
        self._heard: Change | None = None
        self._nudge: asyncio.Event | None = None

    @property
    def limiter(self) -> anyio.CapacityLimiter:
        """Where streams' reads wait for one of STREAM_THREADS threads (made on the event loop)."""
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(STREAM_THREADS)
        return self._limiter

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
            self._wake_topic(topic)

    def subscribe(self, topic: str) -> asyncio.Event:
        self.loop = asyncio.get_running_loop()
        event = asyncio.Event()
        self._waiters[topic].add(event)
        if self.store is not None and (self._watcher is None or self._watcher.done()):
            self._watcher = self.loop.create_task(self._watch())
        return event

    def unsubscribe(self, topic: str, event: asyncio.Event) -> None:
        waiters = self._waiters.get(topic)
        if waiters is not None:
            waiters.discard(event)
            if not waiters:
                del self._waiters[topic]
        if not self._waiters and self._nudge is not None:
            self._nudge.set()  # the listening watcher ends now, with its connection

    def project_runs(self, project: str | None) -> dict[int, Any] | None:
        """The latest runs of a watched project as the watcher last read them (None: not read yet)."""
        return self._projects.get(project)

    def _watched(self) -> tuple[list[int], list[str | None]]:
        runs = sorted({int(t[4:]) for t in self._waiters if t.startswith("run:")})
        projects = sorted({None if t == "project:*" else t[8:] for t in self._waiters if t.startswith("project:")},
                          key=lambda p: p or "")
        return runs, projects

    async def _watch(self) -> None:
        if getattr(self.store, "dialect", None) == "postgresql":
            await self._listen()
        else:
            await self._poll()

    async def _poll(self) -> None:
        """One pass every POLL_SECONDS while any stream is open: a few queries, whatever their number."""
        while self._waiters:
            await asyncio.sleep(POLL_SECONDS)
            await self._pass(*self._watched())

    async def _listen(self) -> None:
        """Passes when the listener hears of a change (see the module's docstring), while any stream is open."""
        self._nudge = nudge = asyncio.Event()
        with self._lock:
            self._heard = None
        # The listener of an earlier watcher may report for a moment after it was told to stop: only
        # this one's reports count (one kept from the other would stop ``_hear`` nudging this watcher).
        self.listener = listener = Listener(self.store.engine, lambda change: self._hear(change, listener))
        listener.start()
        try:
            while self._waiters:
                nudged = await _wait(nudge, SAFETY_SECONDS)
                with self._lock:
                    heard, self._heard = self._heard, None
                runs, projects = self._watched()
                if not nudged:  # nothing heard for SAFETY_SECONDS: a pass over everything watched
                    await self._pass(runs, projects)
                    continue
                if heard is None:
                    continue  # the last stream ended, or a nudge for what an earlier pass took
                if heard.everything:
                    touched = runs
                else:
                    touched = [n for n in runs if n in heard.runs]
                    projects = [p for p in projects if (p is None and heard.projects) or p in heard.projects]
                for number in touched:
                    self._wake_topic(f"run:{number}")
                if projects:
                    if not await self._pass([], projects):
                        await asyncio.sleep(POLL_SECONDS)  # the database refused: ask again in a while
                        self._hear(EVERYTHING)
                    await asyncio.sleep(COALESCE_SECONDS)
        finally:
            listener.stop()
            self.listener = None
            self._nudge = None

    def _hear(self, change: Change, source: Listener | None = None) -> None:
        """A report of the current listener (in its thread): kept for the watcher, which is woken once
        for many. ``source``: the listener reporting (None: the watcher itself)."""
        with self._lock:
            if source is not None and source is not self.listener:
                return
            first = self._heard is None
            self._heard = change if first else self._heard.merge(change)  # type: ignore[union-attr]
        loop, nudge = self.loop, self._nudge
        if first and loop is not None and nudge is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed: the server is ending
                loop.call_soon_threadsafe(nudge.set)

    async def _pass(self, runs: list[int], projects: list[str | None]) -> bool:
        """Read the marks of ``runs`` and the latest runs of ``projects``; wake the streams whose
        changed. False if the database refused (a locked or restarting one)."""
        try:
            marks, latest = await anyio.to_thread.run_sync(self._read, runs, projects, limiter=self.limiter)
        except Exception as e:  # noqa: BLE001 - a locked or restarting database: the next pass tries again
            print(f"runyard server: live events: {type(e).__name__}: {e}", flush=True)
            return False
        if runs:
            self.passes += 1
            for number, mark in marks.items():
                if self._marks.get(number) != mark:
                    self._marks[number] = mark
                    self._wake_topic(f"run:{number}")
            for number in set(self._marks) - set(runs):
                del self._marks[number]
        for project, now in latest.items():
            old = self._projects.get(project)
            self._projects[project] = now
            if old is None or _signatures(old) != _signatures(now):
                self._wake_topic(f"project:{project or '*'}")
        watched = set(self._watched()[1])
        for project in set(self._projects) - watched:
            del self._projects[project]
        return True

    def _read(self, runs: list[int], projects: list[str | None]) -> tuple[dict[int, Any], dict[str | None, Any]]:
        marks = self.store.activity(runs) if runs else {}
        latest = {p: {r.number: r for r in self.store.list_runs(RunQuery(project=p, limit=PROJECT_RUNS)).items}
                  for p in projects}
        return marks, latest

    def _wake_topic(self, topic: str) -> None:
        for event in list(self._waiters.get(topic, ())):
            event.set()


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


async def _read(hub: Hub, function: Callable[..., Any], *args: Any) -> Any:
    """``function(*args)`` in a thread, as one of the streams' (see STREAM_THREADS)."""
    return await anyio.to_thread.run_sync(function, *args, limiter=hub.limiter)


async def _wait(event: asyncio.Event, timeout: float) -> bool:
    """Whether ``event`` was set within ``timeout`` seconds (it is cleared either way)."""
    woken = False
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout)
        woken = True
    event.clear()
    return woken


async def run_stream(store: Any, hub: Hub, number: int, disconnected: Callable[[], Any],
                     hide: bool = False) -> AsyncIterator[bytes]:
    """Metric points, log lines and status changes of one run, from the moment of connecting."""
    topic = f"run:{number}"
    wake = hub.subscribe(topic)
    try:
        run = await _read(hub, store.get_run, number)
        series = {s.key: s for s in await _read(hub, store.list_series, number)}
        tail = await _read(hub, store.tail_logs, number, 1)
        after = tail[-1].id if tail else 0
        status = (run.status, run.status_message, run.exit_code)
        yield _run_frame(run, hide)
        while not await disconnected():
            now_series = await _read(hub, store.list_series, number)
            for info in now_series:
                old = series.get(info.key)
                if old is not None and old.count == info.count:
                    continue
                start = None if old is None or old.last_step is None else old.last_step + 1
                points = await _read(hub, store.history, number, info.key, start, None)
                series[info.key] = info
                if len(points) == 0:
                    continue
                if len(points) > MAX_POINTS_PER_EVENT:
                    yield frame("metric", {"key": info.key, "count": len(points), "truncated": True,
                                           "last_step": info.last_step})
                cut = slice(-MAX_POINTS_PER_EVENT, None)
                yield frame("metric", {"key": info.key, "step": points.steps[cut].tolist(),
                                       "time": points.times[cut].tolist(),
                                       "value": wire.plain(points.values[cut].tolist())})
            while True:  # every line up to now: the hub wakes this stream once per change, not per 1,000 lines
                lines = await _read(hub, store.read_logs, number, after, 1000)
                if lines:
                    after = lines[-1].id
                    yield frame("log", [wire.plain_out(line) for line in lines])
                if len(lines) < 1000:
                    break
            run = await _read(hub, store.get_run, number)
            if (run.status, run.status_message, run.exit_code) != status:
                status = (run.status, run.status_message, run.exit_code)
                yield _run_frame(run, hide)
            while not await _wait(wake, KEEPALIVE_SECONDS):  # asleep until the hub says the run changed
                yield b": keep-alive\n\n"
    finally:
        hub.unsubscribe(topic, wake)


async def project_stream(store: Any, hub: Hub, project: str | None, disconnected: Callable[[], Any],
                         hide: bool = False) -> AsyncIterator[bytes]:
    """Runs of a project (or of all projects) that change state: created, started, ended, renamed."""
    topic = f"project:{project or '*'}"
    wake = hub.subscribe(topic)

    def snapshot() -> dict[int, Any]:
        page = store.list_runs(RunQuery(project=project, limit=PROJECT_RUNS))
        return {r.number: r for r in page.items}

    try:
        known = await _read(hub, snapshot)
        yield b": connected\n\n"
        while not await disconnected():
            if not await _wait(wake, KEEPALIVE_SECONDS):
                yield b": keep-alive\n\n"
                continue
            now = hub.project_runs(project)  # as the hub's watcher read it: no query per stream
            if now is None:
                continue
            changed = [r for n, r in now.items() if n not in known or _signature(known[n]) != _signature(r)]
            known = now
            for r in sorted(changed, key=lambda r: r.number):
                yield _run_frame(r, hide)
    finally:
        hub.unsubscribe(topic, wake)
