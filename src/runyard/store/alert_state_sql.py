"""What alert rules remember per run, kept in the store so that a restart, or a second ingester on
the same database, continues from it instead of starting over (and saying an alert twice).

A watcher reads a run's states once, when it first evaluates the run, and keeps them. After it
evaluates a batch it writes the states that changed together with the alerts that fired, in one
transaction, each state as a compare-and-set on its version: if another process changed one
meanwhile, nothing is written, and the watcher reads the states again and evaluates the batch anew
(see ingest/alerting.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from runyard.store import alerts_sql
from runyard.store.api import AlertEvent
from runyard.store.schema import alert_state

if TYPE_CHECKING:
    from runyard.store.sql import SqlStore

_A = alert_state.c


class _Stale(Exception):
    """Raised inside the transaction to roll it back: these rules' states changed meanwhile."""

    def __init__(self, rules: list[int]) -> None:
        super().__init__(rules)
        self.rules = rules


def read(store: SqlStore, run: int) -> dict[int, tuple[dict[str, Any], int]]:
    """Every rule's state for ``run``: rule id -> (state, version)."""
    with store._read() as conn:
        rows = conn.execute(sa.select(_A.rule_id, _A.state, _A.version).where(_A.run_number == run))
        return {int(r.rule_id): (dict(r.state or {}), int(r.version)) for r in rows}


def write(store: SqlStore, run: int, states: Mapping[int, tuple[Mapping[str, Any], int | None]],
          events: Sequence[AlertEvent]) -> list[int]:
    """Write changed states (rule id -> (state, the version it was read at; None: new)) and record
    ``events``, all or nothing. Returns the rules whose state another process changed since it was
    read (nothing was written then), or [] when everything was."""
    try:
        with store._write() as conn:
            stale: list[int] = []
            for rule_id, (state, version) in sorted(states.items()):
                if version is None:
                    # A first state: inserted unless another process inserted one meanwhile.
                    done = _insert_new(conn, {"rule_id": rule_id, "run_number": run, "state": dict(state),
                                              "version": 1})
                else:
                    done = bool(conn.execute(sa.update(alert_state).where(
                        _A.rule_id == rule_id, _A.run_number == run, _A.version == version,
                    ).values(state=dict(state), version=version + 1)).rowcount)
                if not done:
                    stale.append(rule_id)
            if stale:
                raise _Stale(stale)
            for event in events:
                alerts_sql.insert_event(conn, event)
    except _Stale as e:
        return e.rules
    return []


def _insert_new(conn: Connection, values: dict[str, Any]) -> bool:
    """Insert a row unless one with its key exists; whether it was inserted."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
    stmt = (insert(alert_state).values(values).on_conflict_do_nothing(index_elements=["rule_id", "run_number"])
            .returning(_A.version))  # a row back only when inserted (psycopg's rowcount here is -1)
    return conn.execute(stmt).one_or_none() is not None
