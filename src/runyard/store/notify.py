"""What a write changed, told to every process on the database: PostgreSQL NOTIFY and LISTEN.

A write transaction on PostgreSQL records the runs it touches (``touch``) and, just before it commits,
sends one NOTIFY on its schema's channel (``send``): PostgreSQL delivers it only when the transaction
commits, so a listener that wakes reads what was written, and a rolled-back write tells nobody. Every
writer does it (a server's ingest route, a local agent, the CLI), so a server hears of points that
reached the database any way. The payload names the runs, and the projects whose listing changed (a
run created, renamed, relabelled, or changing state); past ``PAYLOAD_LIMIT`` bytes it is ``*``,
"everything" (PostgreSQL refuses a payload of 8,000 bytes or more).

``Listener``: one dedicated connection per process (a server's live-event hub) in a thread of its
own, waiting for those notifications. On connecting, and again after a lost connection, it reports
"everything": what was written while nobody listened is then read like any other change.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from runyard.store.schema import projects, runs

log = logging.getLogger(__name__)

#: Bytes of payload at most; PostgreSQL's own limit is just under 8,000.
PAYLOAD_LIMIT = 7_000
#: Seconds between looks at the stop flag while no notification comes (and the cost of an idle
#: listener: one wake-up this often).
WAIT_SECONDS = 1.0
#: The pause before connecting again after a lost connection: none the first time (an ended backend,
#: a failover: the server is likely there at once), then this, doubled up to RECONNECT_MAX_SECONDS.
RECONNECT_SECONDS = 0.2
RECONNECT_MAX_SECONDS = 5.0
#: What a write transaction records in its connection's ``info`` (see ``touch``).
_KEY = "runyard_touched"
#: A payload that says "everything changed".
EVERYTHING_PAYLOAD = "*"


@dataclass(frozen=True)
class Change:
    """Runs whose points, logs or state changed, and projects whose listing did; or everything."""

    runs: frozenset[int] = frozenset()
    projects: frozenset[str] = frozenset()
    everything: bool = False

    def merge(self, other: Change) -> Change:
        if self.everything or other.everything:
            return EVERYTHING
        return Change(self.runs | other.runs, self.projects | other.projects)


EVERYTHING = Change(everything=True)


def encode(change: Change) -> str:
    """The NOTIFY payload for ``change``: compact JSON, or ``*`` when it would pass PAYLOAD_LIMIT."""
    if change.everything:
        return EVERYTHING_PAYLOAD
    text = orjson.dumps({"r": sorted(change.runs), "p": sorted(change.projects)}).decode()
    return text if len(text.encode()) <= PAYLOAD_LIMIT else EVERYTHING_PAYLOAD


def decode(payload: str) -> Change:
    """The change a payload names; anything unreadable (another version's payload) is everything."""
    if payload == EVERYTHING_PAYLOAD:
        return EVERYTHING
    try:
        data = orjson.loads(payload)
        return Change(frozenset(int(n) for n in data["r"]), frozenset(str(p) for p in data["p"]))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return EVERYTHING


def channel(schema: str) -> str:
    """The channel of the runyard tables in ``schema``: channels are per database, not per schema,
    and a database may hold several runyard schemas (the tests' do). At most 63 bytes, as a name."""
    name = f"runyard.{schema}"
    if len(name.encode()) > 63:
        name = "runyard." + hashlib.sha256(schema.encode()).hexdigest()[:32]
    return name


def current_channel(conn: Connection) -> str:
    return channel(str(conn.execute(sa.select(sa.func.current_schema())).scalar_one()))


# -- the writing side ---------------------------------------------------------------------------------


@dataclass
class _Touched:
    runs: set[int] = field(default_factory=set)
    #: Runs whose listing changed (their projects are named in the payload).
    listed: set[int] = field(default_factory=set)


def begin(conn: Connection) -> None:
    """Start recording what this write transaction touches (PostgreSQL only: SQLite's readers poll)."""
    conn.info[_KEY] = _Touched()


def touch(conn: Connection, run: int, listing: bool = False) -> None:
    """Record that this transaction changed ``run`` (its listing too, with ``listing``)."""
    touched: _Touched | None = conn.info.get(_KEY)
    if touched is not None:
        touched.runs.add(run)
        if listing:
            touched.listed.add(run)


def send(conn: Connection, channel_name: str) -> None:
    """NOTIFY what this transaction touched, if anything; called just before it commits."""
    touched: _Touched | None = conn.info.pop(_KEY, None)
    if touched is None or not touched.runs:
        return
    names: Iterable[str] = ()
    if touched.listed:
        names = conn.execute(sa.select(projects.c.name).distinct()
                             .select_from(runs.join(projects, projects.c.id == runs.c.project_id))
                             .where(runs.c.number.in_(sorted(touched.listed)))).scalars()
    payload = encode(Change(frozenset(touched.runs), frozenset(names)))
    conn.execute(sa.select(sa.func.pg_notify(channel_name, payload)))


def discard(conn: Connection) -> None:
    """Forget what a transaction that did not commit touched."""
    conn.info.pop(_KEY, None)


# -- the listening side -------------------------------------------------------------------------------


class Listener:
    """A thread that LISTENs on ``engine``'s channel with a connection of its own and reports each
    change to ``heard`` (called in that thread), ``EVERYTHING`` on every (re)connection."""

    def __init__(self, engine: Engine, heard: Callable[[Change], None]) -> None:
        self.engine = engine
        self.heard = heard
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: The listening connection's server process id while connected (tests end it to prove a
        #: reconnection), and how many times it has connected.
        self.backend_pid: int | None = None
        self.connections = 0

    def start(self) -> Listener:
        self._thread = threading.Thread(target=self._run, name="runyard-listen", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Ask the thread to end; it closes its connection within WAIT_SECONDS."""
        self._stop.set()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _connect(self) -> Any:
        import psycopg

        cargs, cparams = self.engine.dialect.create_connect_args(self.engine.url)
        # Keepalives: a peer gone without a word (a cut network) is noticed within about 30 s, not
        # hours later; an ended backend or a restarted server is noticed at once anyway.
        return psycopg.connect(*cargs, **{**cparams, "autocommit": True,
                                          "application_name": f"runyard-listen/{os.getpid()}",
                                          "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5,
                                          "keepalives_count": 3})

    def _run(self) -> None:
        from psycopg import sql

        pause = 0.0
        while not self._stop.is_set():
            try:
                with self._connect() as conn:
                    schema = conn.execute("SELECT current_schema()").fetchone()
                    name = channel(str(schema[0] if schema else "public"))
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(name)))
                    self.backend_pid = conn.info.backend_pid
                    self.connections += 1
                    pause = 0.0
                    self.heard(EVERYTHING)  # whatever was written before this LISTEN took effect
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=WAIT_SECONDS):
                            if note.channel == name:
                                self.heard(decode(note.payload))
            except Exception as e:  # noqa: BLE001 - a lost connection, a refused one: connect again
                self.backend_pid = None
                if self._stop.is_set():
                    break
                log.warning("live events: listening connection lost (%s: %s); connecting again in %.1f s",
                            type(e).__name__, e, pause)
                self._stop.wait(pause)
                pause = min(max(pause * 2, RECONNECT_SECONDS), RECONNECT_MAX_SECONDS)
        self.backend_pid = None
