"""What ``runyard gc`` and ``runyard rm`` ask of the database: which content runs refer to, which
finished runs ended when, and deleting finished runs (their metrics, logs, labels, artifact index
and inputs go with them through the schema's ON DELETE CASCADE, on SQLite and PostgreSQL alike),
and forgetting the upload grants of content no longer stored (``blob_grants``, see blobs_sql.py)."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from runyard.store import limits
from runyard.store.schema import artifacts, blob_grants, model_versions, run_inputs, runs
from runyard.types import RunStatus

#: States in which a run may still need its content or directory: never deleted, never collected.
ACTIVE = (RunStatus.QUEUED.value, RunStatus.STARTING.value, RunStatus.RUNNING.value)

_R = runs.c


def _sha(ref: str | None) -> str | None:
    if ref and ref.startswith("sha256:"):
        return ref[len("sha256:"):]
    return None


def content_references(conn: Connection, runs_only: Sequence[int] | None = None) -> tuple[set[str], set[str]]:
    """(content SHA-256s referred to directly, snapshot ids whose manifests list more): by artifacts,
    inputs, snapshots and uncommitted diffs; of every run, or only of ``runs_only``."""
    shas: set[str] = set()
    snapshots: set[str] = set()
    for chunk in ([None] if runs_only is None else limits.batches(conn, list(runs_only))):
        numbers = None if chunk is None else list(chunk)

        def scoped(column: sa.ColumnElement[int], numbers: list[int] | None = numbers) -> sa.ColumnElement[bool]:
            return sa.true() if numbers is None else column.in_(numbers)

        shas.update(r[0] for r in conn.execute(sa.select(artifacts.c.sha256).where(
            scoped(artifacts.c.run_number)).distinct()))
        shas.update(r[0] for r in conn.execute(sa.select(run_inputs.c.sha256).where(
            scoped(run_inputs.c.run_number)).distinct()))
        for snapshot, diff, launch in conn.execute(
                sa.select(_R.snapshot_id, _R.git_diff_ref, _R.launch).where(scoped(_R.number))):
            if (sha := _sha(snapshot)) is not None:
                shas.add(sha)
                snapshots.add(snapshot)
            if (sha := _sha(diff)) is not None:
                shas.add(sha)
            shas.update(_mounted(launch))
    return shas, snapshots


def _mounted(launch: object) -> set[str]:
    """The content a run's ``--mount RUN:PATH`` will copy in: a queued run needs it before it has
    any input recorded (inputs are recorded when the run starts)."""
    if not isinstance(launch, dict):
        return set()
    found: set[str] = set()
    for mount in launch.get("mounts") or []:
        if isinstance(mount, dict):
            for entry in mount.get("files") or []:
                if isinstance(entry, list | tuple) and len(entry) == 2 and isinstance(entry[1], str):
                    found.add(entry[1])
    return found


def ended_before(conn: Connection, cutoff: float | None) -> list[tuple[int, str]]:
    """(number, id) of runs in a final state that ended before ``cutoff`` (None: every such run)."""
    query = sa.select(_R.number, _R.id).where(_R.status.not_in(ACTIVE))
    if cutoff is not None:
        query = query.where(sa.func.coalesce(_R.ended_at, _R.created_at) < cutoff)
    return [(r.number, r.id) for r in conn.execute(query.order_by(_R.number))]


def delete_runs(conn: Connection, numbers: Sequence[int]) -> list[int]:
    """Delete those of ``numbers`` that are in a final state; returns the numbers deleted. A run that
    became active meanwhile is left alone (the state is checked in the same statement), and so is a
    run a model version points at (the registry's pointers are immutable)."""
    deleted: list[int] = []
    registered = sa.select(model_versions.c.run_number)
    for chunk in limits.batches(conn, list(numbers)):
        rows = conn.execute(sa.delete(runs).where(_R.number.in_(list(chunk)), _R.status.not_in(ACTIVE),
                                                  _R.number.not_in(registered))
                            .returning(_R.number))
        deleted += [r[0] for r in rows]
    return sorted(deleted)


def granted(conn: Connection) -> list[str]:
    """The content that some project holds an upload grant for."""
    return sorted(conn.execute(sa.select(blob_grants.c.sha256).distinct()).scalars())


def drop_grants(conn: Connection, shas: Sequence[str]) -> int:
    """Forget every project's upload grant for ``shas``; returns the rows deleted. For content that
    ``runyard gc`` or ``rm`` removed: an upload proved a project held those bytes, and once they are
    gone, whoever stores them again must not make them readable to that project without its own upload."""
    dropped = 0
    for chunk in limits.batches(conn, sorted(set(shas))):
        dropped += conn.execute(sa.delete(blob_grants).where(blob_grants.c.sha256.in_(list(chunk)))).rowcount
    return dropped
