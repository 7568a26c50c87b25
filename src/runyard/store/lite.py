"""A fast path to a SQLite home for the commands that must answer in a blink.

``runyard run`` has to print its run's number and return within a quarter of a second, and
``runyard ps`` to start in less; importing SQLAlchemy alone takes longer than that on a small
machine. For a SQLite home (the default), these two touch the database through the standard
library's sqlite3 with the same schema, the same WAL mode and the same ``BEGIN IMMEDIATE`` writes as
``SqlStore``; a test checks that both see and write the same rows. Anything else goes through
``SqlStore``, but for ``runyard ls`` on PostgreSQL, which reads the same rows through psycopg alone
(``PostgresListing``). If the schema is not at this code's revision, callers fall back to the full
path, which migrates or explains.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runyard.errors import NotFound
from runyard.store import jsonvalues
from runyard.store.limits import POSTGRES_PARAMS, Limits, batches, sqlite_limits
from runyard.store.newrun import NewRun
from runyard.store.revision import SCHEMA_REVISION
from runyard.types import RunKind, RunStatus


def sqlite_file(url: str) -> Path | None:
    """The database file of a ``sqlite:///`` URL, or None for anything else."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or "?" in url:
        return None
    rest = url[len(prefix) :]
    if not rest or rest == ":memory:":
        return None
    return Path(rest)


@dataclass(frozen=True)
class ActiveRun:
    number: int
    id: str
    name: str | None
    project: str
    status: RunStatus
    created_at: float
    started_at: float | None
    resources: dict[str, Any]
    latest: dict[str, float | None]
    #: Where it runs (``runyard run --on``); None for runs queued before runs recorded it, or an SDK run's.
    executor: str | None = None
    kind: RunKind = RunKind.SCRIPT


@dataclass(frozen=True)
class ListedRun:
    """A line of ``runyard ls``."""

    number: int
    name: str | None
    project: str
    status: RunStatus
    labels: tuple[str, ...]
    created_at: float
    started_at: float | None
    ended_at: float | None
    kind: RunKind = RunKind.SCRIPT

    def duration(self, now: float) -> float | None:
        if self.started_at is None:
            return None
        return (self.ended_at if self.ended_at is not None else now) - self.started_at


class LiteStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.conn = sqlite3.connect(path, timeout=30, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA foreign_keys=ON")
        self.conn.execute("PRAGMA busy_timeout=30000")

    @classmethod
    def open(cls, url: str) -> LiteStore | None:
        """A LiteStore if ``url`` is a SQLite file already at this code's schema, else None."""
        path = sqlite_file(url)
        if path is None or not path.is_file():
            return None
        store = cls(path)
        try:
            revision = store.conn.execute("SELECT version_num FROM alembic_version").fetchone()
        except sqlite3.Error:
            revision = None
        if revision is None or revision[0] != SCHEMA_REVISION:
            store.close()
            return None
        return store

    def close(self) -> None:
        self.conn.close()

    def create_run(self, new: NewRun, now: float | None = None) -> tuple[int, str]:
        """Insert a run (as ``SqlStore.create_run`` does); returns its number and id."""
        from runyard.ids import new_ulid
        from runyard.names import validate_label, validate_run_name

        if new.name is not None:
            validate_run_name(new.name)
        labels = sorted({validate_label(label) for label in new.labels})
        run_id = new.id or new_ulid()
        created = new.created_at if new.created_at is not None else (now or time.time())
        status = RunStatus(new.status)
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            if new.parent is not None and c.execute("SELECT 1 FROM runs WHERE number = ?",
                                                    (new.parent,)).fetchone() is None:
                raise NotFound(f"parent run {new.parent} does not exist")
            c.execute("INSERT INTO projects (name, description, created_at) VALUES (?, '', ?) "
                      "ON CONFLICT (name) DO NOTHING", (new.project, created))
            project_id = c.execute("SELECT id FROM projects WHERE name = ?", (new.project,)).fetchone()[0]
            cursor = c.execute(
                "INSERT INTO runs (id, project_id, name, status, command, created_at, queued_at, started_at,"
                " executor, host, resources, priority, snapshot_id, git_commit, git_branch, git_diff_ref,"
                " parent_number, notes, config, summary, environment, launch, kind)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, '{}', ?, ?, ?)",
                (run_id, project_id, new.name, status.value, _json(new.command), created,
                 created if status is RunStatus.QUEUED else None,
                 created if status is RunStatus.RUNNING else None,
                 new.executor, new.host, _json(dict(new.resources)), new.priority, new.snapshot_id,
                 new.git_commit, new.git_branch, new.git_diff_ref, new.parent, new.notes,
                 _json(dict(new.config)), _json(dict(new.environment)),
                 _json(dict(new.launch)) if new.launch is not None else None, new.kind.value),
            )
            number = int(cursor.lastrowid or 0)
            c.executemany("INSERT INTO run_labels (run_number, label) VALUES (?, ?)",
                          [(number, label) for label in labels])
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        return number, run_id

    def active_runs(self) -> list[ActiveRun]:
        """Queued, starting and running runs, running first, with each one's latest metric values."""
        rows = self.conn.execute(
            "SELECT r.number, r.id, r.name, p.name, r.status, r.created_at, r.started_at, r.resources, r.executor,"
            " r.kind FROM runs r JOIN projects p ON p.id = r.project_id"
            " WHERE r.status IN ('queued', 'starting', 'running')"
            " ORDER BY CASE r.status WHEN 'running' THEN 0 WHEN 'starting' THEN 1 ELSE 2 END,"
            " r.priority DESC, r.number"
        ).fetchall()
        latest: dict[int, dict[str, float | None]] = {}
        for numbers in batches(sqlite_limits(self.conn), [r[0] for r in rows]):  # a long queue: many runs
            marks = ",".join("?" * len(numbers))
            for number, key, value in self.conn.execute(
                f"SELECT run_number, key, last_value FROM metric_series WHERE run_number IN ({marks})"
                " AND key NOT LIKE 'system/%' ORDER BY key", numbers,
            ):
                latest.setdefault(number, {})[key] = value
        return [
            ActiveRun(r[0], r[1], r[2], r[3], RunStatus(r[4]), r[5], r[6], jsonvalues.loads(r[7] or "{}"),
                      latest.get(r[0], {}), r[8], RunKind(r[9]))
            for r in rows
        ]

    def list_runs(self, project: str | None, labels: Sequence[str], statuses: Sequence[str], descending: bool,
                  limit: int, kinds: Sequence[str] = ()) -> list[ListedRun]:
        """``runyard ls`` in its usual form (ordered by number): as ``SqlStore.list_runs`` lists them."""
        return _list_runs(self.conn, "?", sqlite_limits(self.conn), project, labels, statuses, descending, limit,
                          kinds)

    def status_counts(self, since: float) -> dict[str, int]:
        """For ``runyard status``: runs running and queued, runs that failed (or were lost or timed
        out) since ``since``, and alerts nobody has seen."""
        c = self.conn
        counts = dict(c.execute("SELECT status, count(*) FROM runs WHERE status IN ('queued', 'starting', 'running')"
                                " GROUP BY status").fetchall())
        failed = c.execute("SELECT count(*) FROM runs WHERE status IN ('failed', 'lost', 'timeout')"
                           " AND ended_at >= ?", (since,)).fetchone()[0]
        alerts = c.execute("SELECT count(*) FROM alert_events WHERE seen_at IS NULL").fetchone()[0]
        return {"running": int(counts.get("running", 0)) + int(counts.get("starting", 0)),
                "queued": int(counts.get("queued", 0)), "failed": int(failed), "alerts": int(alerts)}

    def count_queued(self) -> int:
        return int(self.conn.execute("SELECT count(*) FROM runs WHERE status = 'queued'").fetchone()[0])


class PostgresListing:
    """``runyard ls`` on a PostgreSQL database through psycopg alone: importing SQLAlchemy and the
    store took about four times as long as the listing itself."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    @classmethod
    def open(cls, url: str) -> PostgresListing | None:
        """A listing if ``url`` is a ``postgresql+psycopg://`` database at this code's schema, else
        None (the full path then connects, and explains what is wrong)."""
        prefix = "postgresql+psycopg://"
        if not url.startswith(prefix):
            return None
        try:
            import psycopg
        except ImportError:
            return None
        try:
            # A short wait: a server that does not answer at once gets the full path, which explains.
            conn = psycopg.connect("postgresql://" + url[len(prefix):], autocommit=True, connect_timeout=3)
        except (psycopg.Error, ValueError):
            return None
        try:
            revision = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        except psycopg.Error:
            revision = None
        if revision is None or revision[0] != SCHEMA_REVISION:
            conn.close()
            return None
        return cls(conn)

    def close(self) -> None:
        self.conn.close()

    def list_runs(self, project: str | None, labels: Sequence[str], statuses: Sequence[str], descending: bool,
                  limit: int, kinds: Sequence[str] = ()) -> list[ListedRun]:
        return _list_runs(self.conn, "%s", Limits(POSTGRES_PARAMS, None), project, labels, statuses, descending,
                          limit, kinds)


def _list_runs(conn: Any, mark: str, limits: Limits, project: str | None, labels: Sequence[str],
               statuses: Sequence[str], descending: bool, limit: int, kinds: Sequence[str] = ()) -> list[ListedRun]:
    """The rows of ``runyard ls`` through a DB-API connection whose parameters are written ``mark``."""
    where: list[str] = []
    args: list[Any] = []
    if project is not None:
        where.append(f"p.name = {mark}")
        args.append(project)
    wanted = sorted(set(labels))
    if wanted:
        marks = ",".join([mark] * len(wanted))
        where.append(f"r.number IN (SELECT run_number FROM run_labels WHERE label IN ({marks})"
                     f" GROUP BY run_number HAVING count(*) = {mark})")
        args += [*wanted, len(wanted)]
    if statuses:
        where.append(f"r.status IN ({','.join([mark] * len(statuses))})")
        args += [RunStatus(s).value for s in statuses]
    if kinds:
        where.append(f"r.kind IN ({','.join([mark] * len(kinds))})")
        args += [RunKind(k).value for k in kinds]
    rows = conn.execute(
        "SELECT r.number, r.name, p.name, r.status, r.created_at, r.started_at, r.ended_at, r.kind"
        " FROM runs r JOIN projects p ON p.id = r.project_id"
        + (" WHERE " + " AND ".join(where) if where else "")
        + f" ORDER BY r.number {'DESC' if descending else 'ASC'} LIMIT {mark}", [*args, limit]).fetchall()
    tags: dict[int, list[str]] = {}
    for numbers in batches(limits, [r[0] for r in rows]):
        marks = ",".join([mark] * len(numbers))
        for number, label in conn.execute(
                f"SELECT run_number, label FROM run_labels WHERE run_number IN ({marks}) ORDER BY label",
                list(numbers)):
            tags.setdefault(number, []).append(label)
    return [ListedRun(r[0], r[1], r[2], RunStatus(r[3]), tuple(tags.get(r[0], ())), r[4], r[5], r[6], RunKind(r[7]))
            for r in rows]


def _json(value: Mapping[str, Any] | Sequence[Any] | None) -> str | None:
    return None if value is None else jsonvalues.dumps(value)
