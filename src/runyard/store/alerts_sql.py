"""Alerts in SQL: the rules (a project's, or one run's), and the events they fired, which are both
the inbox people read (``seen_at``) and the outbox that delivers them (``delivery``). What a rule
remembers between batches is alert_state_sql.py's.

Also what ``runyard status`` counts: active and failed runs, and alerts nobody has seen.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from runyard.store import limits, projects_sql
from runyard.store.api import AlertEvent, AlertRule
from runyard.store.schema import alert_events, alert_rules, projects, runs

_E = alert_events.c
_R = runs.c


# -- rules ------------------------------------------------------------------------------------------

def insert_rule(conn: Connection, rule: AlertRule, clock: Callable[[], float]) -> AlertRule:
    """Add ``rule`` (its project created if new); the rule with its id."""
    project_id = projects_sql.project_id(conn, rule.project, clock) if rule.project else None
    rule_id = conn.execute(
        sa.insert(alert_rules).values(
            project_id=project_id, run_number=rule.run, name=rule.name, kind=rule.kind,
            spec=dict(rule.spec), action=rule.action, notify=list(rule.notify),
            enabled=rule.enabled, source=rule.source, created_at=clock(),
        ).returning(alert_rules.c.id)
    ).scalar_one()
    return replace(rule, id=int(rule_id))


def rules_stamp(conn: Connection) -> tuple[int, int]:
    """(how many rules, highest id): changes whenever a rule is added or removed."""
    count, highest = conn.execute(
        sa.select(sa.func.count(), sa.func.coalesce(sa.func.max(alert_rules.c.id), 0))).one()
    return int(count), int(highest)


def list_rules(conn: Connection, project: str | None, run: int | None) -> list[AlertRule]:
    c = alert_rules.c
    stmt = (
        sa.select(alert_rules, projects.c.name.label("project_name"))
        .select_from(alert_rules.outerjoin(projects, projects.c.id == c.project_id))
        .order_by(c.id)
    )
    if project is not None:
        stmt = stmt.where(projects.c.name == project)
    if run is not None:
        stmt = stmt.where(c.run_number == run)
    return [
        AlertRule(r.name, r.kind, r.spec, r.action, tuple(r.notify), r.project_name, r.run_number,
                  bool(r.enabled), r.source, r.id)
        for r in conn.execute(stmt)
    ]


def remove_rule(conn: Connection, rule_id: int) -> bool:
    """Delete a rule (its past events stay, without it); False if there was none."""
    return bool(conn.execute(sa.delete(alert_rules).where(alert_rules.c.id == rule_id)).rowcount)


# -- events -----------------------------------------------------------------------------------------

def insert_event(conn: Connection, event: AlertEvent) -> AlertEvent:
    """Record ``event``; the event with its id."""
    event_id = conn.execute(
        sa.insert(alert_events).values(
            rule_id=event.rule_id, run_number=event.run, time=event.time, kind=event.kind,
            message=event.message, metric=event.metric, step=event.step, value=event.value,
            seen_at=event.seen_at, delivery=dict(event.delivery),
        ).returning(alert_events.c.id)
    ).scalar_one()
    return AlertEvent(event.run, event.kind, event.message, event.time, event.rule_id, event.metric,
                      event.step, event.value, event.seen_at, event.delivery, int(event_id))


def list_events(conn: Connection, run: int | None, unseen_only: bool) -> list[AlertEvent]:
    stmt = sa.select(alert_events).order_by(_E.id)
    if run is not None:
        stmt = stmt.where(_E.run_number == run)
    if unseen_only:
        stmt = stmt.where(_E.seen_at.is_(None))
    return [
        AlertEvent(r.run_number, r.kind, r.message, r.time, r.rule_id, r.metric, r.step, r.value,
                   r.seen_at, r.delivery, r.id)
        for r in conn.execute(stmt)
    ]


def events_after(conn: Connection, event_id: int, since: float, limit: int) -> list[AlertEvent]:
    """Events with an id above ``event_id`` and a time from ``since`` on, oldest first (the outbox)."""
    stmt = sa.select(alert_events).where(_E.id > event_id, _E.time >= since).order_by(_E.id).limit(limit)
    return [AlertEvent(r.run_number, r.kind, r.message, r.time, r.rule_id, r.metric, r.step, r.value,
                       r.seen_at, r.delivery, r.id) for r in conn.execute(stmt)]


def set_delivery(conn: Connection, event_id: int, delivery: Mapping[str, Any]) -> None:
    conn.execute(sa.update(alert_events).where(_E.id == event_id).values(delivery=dict(delivery)))


def mark_seen(conn: Connection, ids: Sequence[int], now: float) -> None:
    """Mark the events ``ids`` seen at ``now`` (those seen before keep their time)."""
    for part in limits.batches(conn, list(ids)):
        conn.execute(
            sa.update(alert_events)
            .where(_E.id.in_(part), _E.seen_at.is_(None))
            .values(seen_at=now)
        )


# -- runyard status ---------------------------------------------------------------------------------

def status_counts(conn: Connection, since: float, project: str | None) -> dict[str, int]:
    """Runs running and queued, runs that failed (or were lost or timed out) since ``since``, and
    alerts nobody has seen; of one project if given."""
    in_project = (_R.project_id == sa.select(projects.c.id).where(projects.c.name == project).scalar_subquery()
                  if project is not None else sa.true())
    active = (sa.select(_R.status, sa.func.count()).where(in_project, _R.status.in_(("queued", "starting",
                                                                                     "running")))
              .group_by(_R.status))
    failed = sa.select(sa.func.count()).where(in_project, _R.status.in_(("failed", "lost", "timeout")),
                                              _R.ended_at >= since)
    alerts = sa.select(sa.func.count()).select_from(alert_events).where(_E.seen_at.is_(None))
    if project is not None:
        alerts = alerts.where(_E.run_number.in_(sa.select(_R.number).where(in_project)))
    counts = {str(status): int(n) for status, n in conn.execute(active)}
    return {"running": counts.get("running", 0) + counts.get("starting", 0),
            "queued": counts.get("queued", 0), "failed": int(conn.execute(failed).scalar_one()),
            "alerts": int(conn.execute(alerts).scalar_one())}
