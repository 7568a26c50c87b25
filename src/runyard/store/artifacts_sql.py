"""The artifact index of runs in SQL: a run's path -> (size, SHA-256, content reference, mode).

The bytes live in an ArtifactStore (artifacts.py); this is only what each run calls them. Writing
a path again replaces its entry.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from runyard.store.api import ArtifactEntry
from runyard.store.schema import artifacts

_A = artifacts.c


def record(conn: Connection, run: int, path: str, values: Mapping[str, Any]) -> None:
    """Set the entry of ``path`` for ``run`` (size, sha256, content_ref, created_at, mode)."""
    updated = conn.execute(
        sa.update(artifacts).where(_A.run_number == run, _A.path == path).values(**values)
    ).rowcount
    if not updated:
        conn.execute(sa.insert(artifacts).values(run_number=run, path=path, **values))


def list_artifacts(conn: Connection, run: int, prefix: str = "") -> list[ArtifactEntry]:
    """The entries of ``run`` whose path starts with ``prefix``, by path."""
    stmt = sa.select(_A.path, _A.size, _A.sha256, _A.content_ref, _A.created_at, _A.mode).where(_A.run_number == run)
    if prefix:
        stmt = stmt.where(_A.path.startswith(prefix, autoescape=True))
    return [ArtifactEntry(*r) for r in conn.execute(stmt.order_by(_A.path))]
