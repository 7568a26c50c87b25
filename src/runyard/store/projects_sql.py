"""Projects in SQL: created on first use (by name), listed with their run counts."""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from runyard.store import limits
from runyard.store.api import Project
from runyard.store.schema import projects, runs


def project_id(conn: Connection, name: str, clock: Callable[[], float]) -> int:
    """The id of the project ``name``, created (at ``clock()``) if it does not exist."""
    limits.insert_ignore(conn, projects, {"name": name, "created_at": clock()}, ["name"])
    return int(conn.execute(sa.select(projects.c.id).where(projects.c.name == name)).scalar_one())


def list_projects(conn: Connection) -> list[Project]:
    """Every project, by name, with how many runs it has."""
    counts = (
        sa.select(runs.c.project_id, sa.func.count().label("n")).group_by(runs.c.project_id).subquery()
    )
    stmt = (
        sa.select(projects, sa.func.coalesce(counts.c.n, 0).label("run_count"))
        .select_from(projects.outerjoin(counts, counts.c.project_id == projects.c.id))
        .order_by(projects.c.name)
    )
    return [Project(r.id, r.name, r.description, r.created_at, int(r.run_count)) for r in conn.execute(stmt)]
