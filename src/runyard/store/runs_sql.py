"""Runs in SQL: references, listing with filters, sorting and keyset cursors, and changes (a new
run, a patch whose status change transitions.py checks, labels).

Sorting by a config or summary value happens in SQL on the JSON columns (``json_extract`` on SQLite,
``->`` on JSONB in PostgreSQL), runs lacking the key last, ties broken by run number, so a cursor
(the last row's sort value and number) continues exactly where the previous page ended.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from runyard.errors import Ambiguous, Conflict, InvalidArgument, NotFound
from runyard.ids import new_ulid
from runyard.names import is_number, validate_label, validate_project_name, validate_run_name
from runyard.store import jsonvalues, limits, notify, projects_sql, transitions
from runyard.store.api import RUN_SORT_FIELDS, NewRun, Page, Run, RunPatch, RunQuery
from runyard.store.schema import log_lines, metric_series, projects, run_labels, runs
from runyard.types import RunKind, RunStatus

_ULID_PREFIX = re.compile(r"^[0-9A-Za-z]{4,26}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_R = runs.c
#: Columns of a run that a project's live stream shows (server/events.py ``_signature``): a write
#: to one of them changes the project's listing.
_LISTED = frozenset({"status", "name", "status_message", "ended_at", "exit_code"})


def _run_columns() -> list[ColumnElement[Any]]:
    return [*runs.c, projects.c.name.label("project_name")]


def _base_select() -> sa.Select[Any]:
    return sa.select(*_run_columns()).select_from(runs.join(projects, projects.c.id == _R.project_id))


def labels_of(conn: Connection, numbers: Sequence[int]) -> dict[int, tuple[str, ...]]:
    out: dict[int, list[str]] = {n: [] for n in numbers}
    for part in limits.batches(conn, numbers):
        rows = conn.execute(
            sa.select(run_labels.c.run_number, run_labels.c.label)
            .where(run_labels.c.run_number.in_(part))
            .order_by(run_labels.c.run_number, run_labels.c.label)
        )
        for number, label in rows:
            out[number].append(label)
    return {n: tuple(labels) for n, labels in out.items()}


def to_run(row: sa.Row[Any], labels: tuple[str, ...]) -> Run:
    m = row._mapping
    return Run(
        number=m["number"], id=m["id"], project=m["project_name"], name=m["name"],
        status=RunStatus(m["status"]), status_message=m["status_message"], command=m["command"],
        created_at=m["created_at"], queued_at=m["queued_at"], started_at=m["started_at"],
        ended_at=m["ended_at"], heartbeat_at=m["heartbeat_at"], exit_code=m["exit_code"],
        executor=m["executor"], host=m["host"], resources=dict(m["resources"] or {}),
        priority=m["priority"], snapshot_id=m["snapshot_id"], git_commit=m["git_commit"],
        git_branch=m["git_branch"], git_diff_ref=m["git_diff_ref"], parent=m["parent_number"],
        notes=m["notes"], config=dict(m["config"] or {}), summary=dict(m["summary"] or {}),
        environment=dict(m["environment"] or {}), labels=labels,
        launch=dict(m["launch"]) if m["launch"] is not None else None, kind=RunKind(m["kind"]),
    )


def fetch_runs(conn: Connection, where: ColumnElement[bool]) -> list[Run]:
    rows = conn.execute(_base_select().where(where).order_by(_R.number)).all()
    labels = labels_of(conn, [r.number for r in rows])
    return [to_run(r, labels[r.number]) for r in rows]


def fetch_run(conn: Connection, number: int) -> Run:
    """The run ``number``, which exists."""
    return fetch_runs(conn, _R.number == number)[0]


def children_of(conn: Connection, number: int) -> list[Run]:
    return fetch_runs(conn, _R.parent_number == number)


def resolve_ref(conn: Connection, ref: str | int, project: str | None = None) -> int:
    """A run's number from its number, its name, or a unique prefix of its id; with ``project``,
    among that project's runs only: another project's runs are neither found nor listed."""
    text = str(ref).strip()
    if not text:
        raise InvalidArgument("empty run reference; give a run number, name or id prefix")
    if _CONTROL.search(text):
        raise InvalidArgument(f"run reference {text[:80]!r} contains a control character; give a run number, "
                              "name or id prefix")
    if is_number(text) and int(text) > limits.INT64_MAX:
        raise InvalidArgument(f"run reference {text[:80]}: run numbers go up to {limits.INT64_MAX}")
    scope: ColumnElement[bool] = sa.true() if project is None else _R.project_id == (
        sa.select(projects.c.id).where(projects.c.name == project).scalar_subquery())
    if is_number(text):
        number = conn.execute(sa.select(_R.number).where(_R.number == int(text), scope)).scalar()
        if number is None:
            raise NotFound(f"no run number {text}")
        return int(number)
    named = conn.execute(sa.select(_R.number).where(_R.name == text, scope).order_by(_R.number)).scalars().all()
    if len(named) == 1:
        return int(named[0])
    if len(named) > 1:
        listed = ", ".join(str(n) for n in named[:10])
        raise Ambiguous(f"{len(named)} runs are named {text!r} (numbers {listed}); use a number")
    if _ULID_PREFIX.match(text):
        matches = conn.execute(
            sa.select(_R.number).where(_R.id.startswith(text.upper()), scope).limit(11)
        ).scalars().all()
        if len(matches) == 1:
            return int(matches[0])
        if len(matches) > 1:
            listed = ", ".join(str(n) for n in matches[:10])
            raise Ambiguous(f"id prefix {text!r} matches several runs (numbers {listed}); give more characters")
    raise NotFound(f"no run matches {text!r} (tried number, name and id prefix)")


def _sort_keys(conn: Connection, sort: str) -> list[ColumnElement[Any]]:
    """Sort keys, most significant first, before the run number that breaks ties.

    Runs without the value always come last; for config and summary values, numbers come before
    anything else (NaN, strings), whichever the direction, so "best accuracy first" shows numbers.
    """
    if sort in RUN_SORT_FIELDS:
        column = _R[sort]
        return [sa.case((column.is_(None), 1), else_=0), column]
    prefix, _, key = sort.partition(".")
    if prefix not in ("config", "summary") or not key:
        choices = ", ".join(RUN_SORT_FIELDS)
        raise InvalidArgument(f"cannot sort by {sort!r}: use one of {choices}, config.<key> or summary.<key>")
    if '"' in key or len(key) > 256 or _CONTROL.search(key):
        raise InvalidArgument(f"cannot sort by {sort[:300]!r}: the key may not contain quotes or control "
                              "characters, and is at most 256 characters")
    column = _R[prefix]
    if conn.dialect.name == "postgresql":
        value: ColumnElement[Any] = column.op("->", return_type=JSONB())(sa.literal(key, sa.String))
        kind: ColumnElement[Any] = sa.func.jsonb_typeof(value)
        numeric = kind == "number"
    else:
        path = f'$."{key}"'
        value = sa.func.json_extract(column, path)
        kind = sa.func.json_type(column, path)
        numeric = kind.in_(["integer", "real"])
    missing = sa.case((value.is_(None), 1), else_=0)
    return [missing, sa.case((numeric, 0), else_=1), value]


def _encode_cursor(values: list[Any]) -> str:
    return base64.urlsafe_b64encode(jsonvalues.dumps(values).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str, width: int) -> list[Any]:
    try:
        values = jsonvalues.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(values, list) or len(values) != width:
            raise ValueError
        return values
    except Exception:  # noqa: BLE001 - whatever a malformed cursor raises
        raise InvalidArgument(f"invalid cursor {cursor[:40]!r}; pass the next_cursor of a previous page") from None


def _after(conn: Connection, keys: list[ColumnElement[Any]], values: list[Any],
           descending: bool) -> ColumnElement[bool]:
    """Rows strictly after ``values`` in the order of ``keys`` (the flags ascend, the rest as asked)."""
    terms = []
    for i, (key, value) in enumerate(zip(keys, values, strict=True)):
        if value is None:
            continue  # among rows equal so far, none sorts strictly after a missing value
        down = descending and i >= len(keys) - 2  # the value and the run number follow the direction
        bound = _bound(conn, key, value)
        equal_before = [k.is_(None) if v is None else k == _bound(conn, k, v)
                        for k, v in zip(keys[:i], values[:i], strict=True)]
        terms.append(sa.and_(*equal_before, key < bound if down else key > bound))
    return sa.or_(*terms)


def _bound(conn: Connection, key: ColumnElement[Any], value: Any) -> Any:
    if conn.dialect.name == "postgresql" and isinstance(key.type, JSONB):
        return sa.cast(sa.literal(jsonvalues.dumps(value)), JSONB)
    return sa.literal(value)


def _carrying_all(conn: Connection, labels: Sequence[str]) -> sa.Select[Any]:
    """Numbers of the runs that carry every one of ``labels``: one subquery whatever their number
    (a condition per label nests as deep as there are labels, and PostgreSQL plans the joins of a
    thousand such conditions for longer than anyone waits)."""
    wanted = sorted(set(labels))
    most = limits.limits_of(conn).params // 2
    if len(wanted) > most:
        raise InvalidArgument(f"{len(wanted)} labels in one query; this database takes at most {most}")
    c = run_labels.c
    # (run_number, label) is the key, so a run counted len(wanted) times carries them all.
    return (sa.select(c.run_number).where(c.label.in_(wanted)).group_by(c.run_number)
            .having(sa.func.count() == len(wanted)))


def list_runs(conn: Connection, query: RunQuery) -> Page[Run]:
    if not 1 <= query.limit <= 10_000:
        raise InvalidArgument(f"limit must be between 1 and 10000, not {query.limit}")
    keys = [*_sort_keys(conn, query.sort), _R.number]
    conditions: list[ColumnElement[bool]] = []
    if query.project is not None:
        conditions.append(projects.c.name == validate_project_name(query.project))
    if query.labels:
        for label in query.labels:
            validate_label(label)
        conditions.append(_R.number.in_(_carrying_all(conn, query.labels)))
    if query.status:
        conditions.append(_R.status.in_([RunStatus(s).value for s in query.status]))
    if query.kinds:
        conditions.append(_R.kind.in_([RunKind(k).value for k in query.kinds]))
    if query.cursor:
        conditions.append(_after(conn, keys, _decode_cursor(query.cursor, len(keys)), query.descending))
    order = [k.desc() if query.descending and i >= len(keys) - 2 else k.asc() for i, k in enumerate(keys)]
    stmt = (
        _base_select()
        .add_columns(*(k.label(f"sort_{i}") for i, k in enumerate(keys[:-1])))
        .where(*conditions)
        .order_by(*order)
        .limit(query.limit + 1)
    )
    rows = conn.execute(stmt).all()
    more = len(rows) > query.limit
    rows = rows[: query.limit]
    labels = labels_of(conn, [r.number for r in rows])
    items = [to_run(r, labels[r.number]) for r in rows]
    cursor = None
    if more:
        last = rows[-1]._mapping
        cursor = _encode_cursor([last[f"sort_{i}"] for i in range(len(keys) - 1)] + [last["number"]])
    return Page(items, cursor)


def merge_json(current: Mapping[str, Any], change: Mapping[str, Any]) -> dict[str, Any]:
    """``current`` updated with ``change``; keys mapped to None are removed."""
    merged = dict(current)
    for key, value in change.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[str(key)] = value
    return merged


def activity(conn: Connection, numbers: Sequence[int]) -> dict[int, tuple[Any, ...]]:
    """A mark per run that changes whenever its points, its log or its state do (three queries for
    any number of runs): what a live-event stream would send. Runs that do not exist are left out."""
    numbers = list(numbers)
    if not numbers:
        return {}
    points = {r[0]: r[1] for r in conn.execute(
        sa.select(metric_series.c.run_number, sa.func.sum(metric_series.c.point_count))
        .where(metric_series.c.run_number.in_(numbers)).group_by(metric_series.c.run_number))}
    logs = {r[0]: r[1] for r in conn.execute(
        sa.select(log_lines.c.run_number, sa.func.max(log_lines.c.id))
        .where(log_lines.c.run_number.in_(numbers)).group_by(log_lines.c.run_number))}
    rows = conn.execute(sa.select(_R.number, _R.status, _R.status_message, _R.exit_code)
                        .where(_R.number.in_(numbers))).all()
    return {r.number: (int(points.get(r.number) or 0), logs.get(r.number), r.status, r.status_message, r.exit_code)
            for r in rows}


def with_status(conn: Connection, statuses: Sequence[RunStatus]) -> list[Run]:
    """Runs in these states, highest priority first, then oldest first (the queue's order)."""
    rows = conn.execute(
        _base_select().where(_R.status.in_([RunStatus(s).value for s in statuses]))
        .order_by(_R.priority.desc(), _R.number)
    ).all()
    labels = labels_of(conn, [r.number for r in rows])
    return [to_run(r, labels[r.number]) for r in rows]


# -- changes ----------------------------------------------------------------------------------------

def require_run(conn: Connection, number: int) -> None:
    if conn.execute(sa.select(_R.number).where(_R.number == number)).scalar() is None:
        raise NotFound(f"no run number {number}")


def insert_run(conn: Connection, new: NewRun, clock: Callable[[], float]) -> int:
    """Insert a run (its project created if new); its number."""
    if new.name is not None:
        validate_run_name(new.name)
    labels = sorted({validate_label(label) for label in new.labels})
    run_id = new.id or new_ulid()
    created = new.created_at if new.created_at is not None else clock()
    status = RunStatus(new.status)
    if new.parent is not None and conn.execute(
        sa.select(_R.number).where(_R.number == new.parent)
    ).scalar() is None:
        raise NotFound(f"parent run {new.parent} does not exist")
    if conn.execute(sa.select(_R.number).where(_R.id == run_id)).scalar() is not None:
        raise Conflict(f"a run with id {run_id} already exists")
    number = int(conn.execute(
        sa.insert(runs).values(
            id=run_id, project_id=projects_sql.project_id(conn, new.project, clock), name=new.name,
            status=status.value, command=new.command, created_at=created,
            queued_at=created if status is RunStatus.QUEUED else None,
            started_at=created if status is RunStatus.RUNNING else None,
            executor=new.executor, host=new.host, resources=dict(new.resources),
            priority=new.priority, snapshot_id=new.snapshot_id, git_commit=new.git_commit,
            git_branch=new.git_branch, git_diff_ref=new.git_diff_ref, parent_number=new.parent,
            notes=new.notes, config=dict(new.config), summary={}, environment=dict(new.environment),
            launch=dict(new.launch) if new.launch is not None else None, kind=new.kind.value,
        ).returning(_R.number)
    ).scalar_one())
    if labels:
        conn.execute(sa.insert(run_labels), [{"run_number": number, "label": lb} for lb in labels])
    notify.touch(conn, number, listing=True)
    return number


def update_run(conn: Connection, number: int, patch: RunPatch, clock: Callable[[], float],
               notes_append: Sequence[str] = (), extra: Mapping[str, Any] | None = None) -> None:
    """Apply ``patch`` (a status change checked by transitions.py), append paragraphs to the notes,
    and set the columns in ``extra`` as they are."""
    values: dict[str, Any] = dict(extra or {})
    if patch.name is not None:
        values["name"] = validate_run_name(patch.name)
    for field in ("notes", "status_message", "exit_code", "started_at", "ended_at", "heartbeat_at"):
        if getattr(patch, field) is not None:
            values[field] = getattr(patch, field)
    current = conn.execute(
        sa.select(_R.status, _R.config, _R.summary, _R.environment, _R.started_at, _R.notes)
        .where(_R.number == number)
        .with_for_update()
    ).one_or_none()
    if current is None:
        raise NotFound(f"no run number {number}")
    if patch.status is not None:
        values.update(_status_change(RunStatus(current.status), RunStatus(patch.status),
                                     current.started_at, values, clock))
    for field in ("config", "summary", "environment"):
        change = getattr(patch, field)
        if change is not None:
            values[field] = merge_json(getattr(current, field) or {}, change)
    if notes_append:
        base = values.get("notes", current.notes) or ""
        values["notes"] = "\n\n".join([base, *notes_append]) if base else "\n\n".join(notes_append)
    if values:
        conn.execute(sa.update(runs).where(_R.number == number).values(**values))
        notify.touch(conn, number, listing=not _LISTED.isdisjoint(values))


def _status_change(old: RunStatus, new: RunStatus, started_at: float | None,
                   values: Mapping[str, Any], clock: Callable[[], float]) -> dict[str, Any]:
    transitions.check_transition(old, new)
    change: dict[str, Any] = {"status": new.value}
    now = clock()
    if new is RunStatus.RUNNING and started_at is None and "started_at" not in values:
        change["started_at"] = now
    if new.is_terminal() and "ended_at" not in values:
        change["ended_at"] = now
    return change


def set_labels(conn: Connection, number: int, add: Sequence[str], remove: Sequence[str]) -> None:
    adding = sorted({validate_label(label) for label in add})
    removing = sorted({validate_label(label) for label in remove})
    if adding:
        limits.insert_ignore(conn, run_labels, [{"run_number": number, "label": label} for label in adding],
                             ["run_number", "label"])
    for part in limits.batches(conn, removing):
        conn.execute(sa.delete(run_labels).where(run_labels.c.run_number == number, run_labels.c.label.in_(part)))
    if adding or removing:
        notify.touch(conn, number, listing=True)


def mark_lost(conn: Connection, run_id: str, message: str, clock: Callable[[], float]) -> bool:
    """Mark a run lost unless it already ended; True if it was marked."""
    row = conn.execute(sa.select(_R.number, _R.status).where(_R.id == run_id)).one_or_none()
    # Only a run some process holds can be lost: not a queued one, nor one that ended.
    if row is None or RunStatus(row.status) is RunStatus.LOST \
            or not transitions.may_become(RunStatus(row.status), RunStatus.LOST):
        return False
    update_run(conn, int(row.number), RunPatch(status=RunStatus.LOST, status_message=message), clock)
    return True
