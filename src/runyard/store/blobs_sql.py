"""Which stored content a project may see: what a token limited to one project may read, refer to
in its runs' records, or be told the server holds.

Content is addressed by its hash, and one object may belong to runs of several projects. A
project's token sees an object when one of the project's runs refers to it as an artifact, or when
a token of the project uploaded it (``blob_grants``: uploading the bytes proves it holds them).
Knowing a hash proves nothing, so it grants nothing. Both lookups use an index on the hash.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from runyard.store import limits, projects_sql
from runyard.store.schema import artifacts, blob_grants, projects, runs


def visible(conn: Connection, project: str, shas: Sequence[str]) -> set[str]:
    """Those of ``shas`` that ``project`` may see."""
    project_id = sa.select(projects.c.id).where(projects.c.name == project).scalar_subquery()
    a, g = artifacts.c, blob_grants.c
    found: set[str] = set()
    for chunk in limits.batches(conn, sorted(set(shas))):
        wanted = list(chunk)
        found.update(conn.execute(
            sa.select(a.sha256).select_from(artifacts.join(runs, runs.c.number == a.run_number))
            .where(a.sha256.in_(wanted), runs.c.project_id == project_id).distinct()).scalars())
        found.update(conn.execute(
            sa.select(g.sha256).where(g.project_id == project_id, g.sha256.in_(wanted))).scalars())
    return found


def grant(conn: Connection, project: str, sha256: str, clock: Callable[[], float]) -> None:
    """A token limited to ``project`` uploaded this content: the project may see it from now on."""
    limits.insert_ignore(conn, blob_grants, {"project_id": projects_sql.project_id(conn, project, clock),
                                             "sha256": sha256, "created_at": clock()},
                         ["project_id", "sha256"])
