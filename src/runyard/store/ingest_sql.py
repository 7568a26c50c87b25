"""Ingest in SQL: a batch of a writer's spool records applied to its run in one transaction,
exactly once. A cursor per (run, writer) holds the last sequence number applied: a batch at or
below it changes nothing, one overlapping it is refused. The records may start the run (an SDK
run), or attach to the run ``runyard run`` made; what they may say of its status is checked by
transitions.py (``by_records``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from runyard.errors import Conflict, NotFound
from runyard.store import alerts_sql, artifacts_sql, inputs_sql, logs_sql, runs_sql, transitions
from runyard.store.api import IngestBatch, IngestResult, NewRun, RunPatch
from runyard.store.schema import alert_rules, ingest_cursors, projects, runs
from runyard.types import RunStatus

_R = runs.c


def state(conn: Connection, run_id: str, writer: str) -> tuple[int, int | None, str | None]:
    """(cursor of ``writer`` or -1, the run's number, its project), the last two None when no run
    has this id: one query."""
    c = ingest_cursors.c
    stmt = (sa.select(_R.number, projects.c.name, c.seq)
            .select_from(runs.join(projects, projects.c.id == _R.project_id)
                         .outerjoin(ingest_cursors, sa.and_(c.run_number == _R.number, c.writer == writer)))
            .where(_R.id == run_id))
    row = conn.execute(stmt).one_or_none()
    if row is None:
        return -1, None, None
    return (-1 if row.seq is None else int(row.seq)), int(row.number), str(row.name)


def apply_batch(conn: Connection, batch: IngestBatch, clock: Callable[[], float],
                chunk_points: int | None) -> IngestResult:
    """Apply ``batch`` unless its records were (the run created if they start it); see ``IngestBatch``."""
    c = ingest_cursors.c
    number = conn.execute(sa.select(_R.number).where(_R.id == batch.run_id)).scalar()
    if number is None:
        if batch.start is None:
            raise NotFound(f"run {batch.run_id} is not in the store and these records do not start it")
        number = runs_sql.insert_run(conn, _new_run_of(batch.run_id, batch.start), clock)
        started_here = True
    else:
        started_here = False
    cursor = conn.execute(
        sa.select(c.seq).where(c.run_number == number, c.writer == batch.writer).with_for_update()
    ).scalar()
    if cursor is not None and cursor >= batch.last_seq:
        return IngestResult(int(number), applied=False)
    if cursor is not None and cursor >= batch.first_seq:
        raise Conflict(f"records {batch.first_seq}..{batch.last_seq} of writer {batch.writer} overlap "
                       f"what is applied (up to {cursor}); filter by ingest_cursor() first")
    _apply_records(conn, int(number), batch, started_here, clock, chunk_points)
    if cursor is None:
        conn.execute(sa.insert(ingest_cursors).values(run_number=number, writer=batch.writer,
                                                      seq=batch.last_seq))
    else:
        conn.execute(sa.update(ingest_cursors).where(c.run_number == number, c.writer == batch.writer)
                     .values(seq=batch.last_seq))
    return IngestResult(int(number), applied=True)


def _apply_records(conn: Connection, number: int, batch: IngestBatch, started_here: bool, clock: Callable[[], float],
                   chunk_points: int | None) -> None:
    """What the records of ``batch`` say about run ``number``, written: its state, config, summary,
    labels, notes, points, log, inputs, artifacts and alert rules."""
    current = RunStatus(conn.execute(sa.select(_R.status).where(_R.number == number)).scalar_one())
    extra: dict[str, Any] = {}
    config = dict(batch.config)
    environment = dict(batch.environment)
    labels_added = list(batch.labels_added)
    notes = list(batch.notes)
    status: RunStatus | None = None
    if batch.start is not None and not started_here:
        # A run made by `runyard run` (or a re-read start): merge what the script declares.
        config = {**dict(batch.start.get("config") or {}), **config}
        environment = {**dict(batch.start.get("environment") or {}), **environment}
        labels_added += list(batch.start.get("labels") or [])
        if batch.start.get("notes"):
            notes.insert(0, str(batch.start["notes"]))
        if current in (RunStatus.QUEUED, RunStatus.STARTING):
            # Only a run its agent claimed: a start for a queued one would skip the scheduler.
            transitions.check_transition(current, RunStatus.RUNNING, by_records=True, field="start")
            status = RunStatus.RUNNING
            if batch.start.get("time") is not None:
                extra["started_at"] = batch.start["time"]
    for key in ("git_commit", "git_branch", "git_diff_ref"):
        if key in environment:
            extra[key] = environment.pop(key)
    if batch.heartbeat is not None:
        extra["heartbeat_at"] = batch.heartbeat
    end = batch.end
    patch = RunPatch(
        config=config or None, summary=batch.summary or None, environment=environment or None,
        status=RunStatus(end["status"]) if end is not None else status,
        exit_code=end.get("exit_code") if end is not None else None,
        ended_at=end.get("time") if end is not None else None,
        status_message=end.get("message") if end is not None else None,
    )
    if end is not None and current.is_terminal() and current is not RunStatus.LOST:
        # Stopped by a person or a rule before the script said how it ended: keep that.
        patch = RunPatch(config=patch.config, summary=patch.summary, environment=patch.environment)
    elif patch.status is not None:
        # What a writer may say through its records: never back into the queue (the scheduler
        # would start the command again, beside the first), only how its own process went.
        transitions.check_transition(current if status is None else status, patch.status, by_records=True,
                                     field="end.status" if end is not None else "start")
    runs_sql.update_run(conn, number, patch, clock, notes_append=notes, extra=extra)
    if labels_added or batch.labels_removed:
        runs_sql.set_labels(conn, number, labels_added, batch.labels_removed)
    if batch.points:
        from runyard.store import series_sql

        series_sql.append_points(conn, number, batch.points, chunk_points)
    if batch.logs:
        logs_sql.append(conn, number, batch.logs)
    for item in batch.inputs:
        inputs_sql.add(conn, number, item)
    for path, size, sha256, ref, mode in batch.artifacts:
        artifacts_sql.record(conn, number, path, {"size": size, "sha256": sha256, "content_ref": ref,
                                                "created_at": clock(), "mode": mode})
    for rule in batch.alert_rules:
        # A rule the script declared (run.alert): for this run; the same name replaces it.
        c = alert_rules.c
        conn.execute(sa.delete(alert_rules).where(c.run_number == number, c.name == rule.name))
        alerts_sql.insert_rule(conn, replace(rule, project=None, run=number), clock)


def _new_run_of(run_id: str, start: Mapping[str, Any]) -> NewRun:
    return NewRun(
        project=str(start.get("project") or "default"), id=run_id, name=start.get("name"),
        command=list(start.get("command") or []) or None, config=dict(start.get("config") or {}),
        labels=list(start.get("labels") or []), notes=str(start.get("notes") or ""),
        host=start.get("host"), environment=dict(start.get("environment") or {}), executor="sdk",
        created_at=start.get("time"), status=RunStatus.RUNNING,
    )

