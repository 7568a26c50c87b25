"""Lineage in SQL: what each run consumed (``run_inputs``: content by hash, from which run and
path, mounted where), read both ways: a run's inputs, and the runs that consumed some content or
some run's artifacts."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from runyard.store.api import RunInput
from runyard.store.schema import run_inputs

_I = run_inputs.c


def add(conn: Connection, run: int, item: RunInput) -> None:
    conn.execute(
        sa.insert(run_inputs).values(
            run_number=run, kind=item.kind, source_run_number=item.source_run,
            source_path=item.source_path, sha256=item.sha256, mount=item.mount,
        )
    )


def _inputs(conn: Connection, where: sa.ColumnElement[bool]) -> list[RunInput]:
    rows = conn.execute(sa.select(run_inputs).where(where).order_by(_I.id))
    return [RunInput(r.kind, r.sha256, r.source_run_number, r.source_path, r.mount, r.run_number) for r in rows]


def inputs_of(conn: Connection, run: int) -> list[RunInput]:
    """What ``run`` consumed."""
    return _inputs(conn, _I.run_number == run)


def consumers_of(conn: Connection, sha256: str) -> list[RunInput]:
    """Which runs consumed this content."""
    return _inputs(conn, _I.sha256 == sha256)


def consumers_of_run(conn: Connection, run: int) -> list[RunInput]:
    """Which runs consumed an artifact of ``run``."""
    return _inputs(conn, _I.source_run_number == run)
