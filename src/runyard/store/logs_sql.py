"""A run's log in SQL: lines appended in order (stdout and stderr interleaved as they came), read
from the end or after an id."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from runyard.store import notify
from runyard.store.api import LogLine
from runyard.store.schema import log_lines

_L = log_lines.c


def append(conn: Connection, run: int, lines: Sequence[LogLine]) -> None:
    conn.execute(
        sa.insert(log_lines),
        [{"run_number": run, "stream": ln.stream, "time": ln.time, "text": ln.text} for ln in lines],
    )
    notify.touch(conn, run)


def tail(conn: Connection, run: int, count: int) -> list[LogLine]:
    """The last ``count`` lines of the run's log, in order."""
    rows = conn.execute(
        sa.select(_L.id, _L.stream, _L.time, _L.text).where(_L.run_number == run).order_by(_L.id.desc()).limit(count)
    ).all()
    return [LogLine(r.time, r.text, r.stream, r.id) for r in reversed(rows)]


def read(conn: Connection, run: int, after: int, limit: int) -> list[LogLine]:
    """Up to ``limit`` lines of the run's log after the line ``after`` (0: from the start)."""
    rows = conn.execute(
        sa.select(_L.id, _L.stream, _L.time, _L.text)
        .where(_L.run_number == run, _L.id > after)
        .order_by(_L.id)
        .limit(limit)
    )
    return [LogLine(r.time, r.text, r.stream, r.id) for r in rows]
