"""Many agents, one queue: leases, claims on launched runs, and stop requests, in SQL.

An agent holds the lease ``agent:<id>`` and renews it while it lives; each run it claims records
it (``run_claims``). Only the holder acts on its runs: it counts them against its machine, starts
them, and carries out the stop requests others write. Another agent acts on a run only when the
holder's lease has expired: it queues again a run that was claimed and never handed to a
supervisor, and marks lost one that was. Leases are timed by the database's clock (see
``SqlStore.lease_clock``), so machines whose clocks disagree still judge expiry alike.

Every decision that another process could race is a conditional change in one transaction (rows
locked on PostgreSQL, the database locked on SQLite), so two agents never both act on one run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from runyard.store import limits, runs_sql
from runyard.store.api import Claim, Lease, Run, RunPatch
from runyard.store.schema import leases, log_lines, metric_series, run_claims, runs
from runyard.types import RunStatus

if TYPE_CHECKING:
    from runyard.store.sql import SqlStore

AGENT_LEASE = "agent:"
_ACTIVE = (RunStatus.STARTING.value, RunStatus.RUNNING.value)
_L = leases.c
_C = run_claims.c
_R = runs.c


def agent_lease(agent: str) -> str:
    return AGENT_LEASE + agent


# -- leases -----------------------------------------------------------------------------------------

def take_lease(store: SqlStore, name: str, holder: str, seconds: float, host: str | None,
               info: Mapping[str, Any]) -> bool:
    """Take or renew the lease ``name`` for ``seconds``; False if another holder has it unexpired."""
    with store._read() as conn:
        row = conn.execute(sa.select(_L.holder, _L.expires_at).where(_L.name == name)).one_or_none()
        # A reader first: a process waiting for a lease held by another asks often, and on SQLite a
        # write would take the database's lock each time.
        if row is not None and row.holder != holder and row.expires_at > store.lease_clock(conn):
            return False
    with store._write() as conn:
        now = store.lease_clock(conn)
        values = {"holder": holder, "host": host, "acquired_at": now, "expires_at": now + seconds,
                  "info": dict(info)}
        limits.insert_ignore(conn, leases, {"name": name, **values}, ["name"])
        held = conn.execute(sa.select(_L.holder, _L.expires_at, _L.acquired_at).where(_L.name == name)
                            .with_for_update()).one()
        if held.holder != holder and held.expires_at > now:
            return False
        if held.holder == holder:
            values["acquired_at"] = held.acquired_at  # a renewal: held since then
        conn.execute(sa.update(leases).where(_L.name == name).values(**values))
        return True


def release_lease(store: SqlStore, name: str, holder: str, keep: bool) -> None:
    """Give up a lease now. ``keep`` leaves the row, expired (an agent's: its machine stays known)."""
    with store._write() as conn:
        where = sa.and_(_L.name == name, _L.holder == holder)
        if keep:
            conn.execute(sa.update(leases).where(where).values(expires_at=store.lease_clock(conn)))
        else:
            conn.execute(sa.delete(leases).where(where))


def list_leases(store: SqlStore, prefix: str) -> list[tuple[Lease, bool]]:
    """Leases whose name starts with ``prefix``, each with whether it is live now."""
    with store._read() as conn:
        now = store.lease_clock(conn)
        rows = conn.execute(sa.select(leases).where(_L.name.startswith(prefix, autoescape=True)).order_by(_L.name))
        return [(Lease(r.name, r.holder, r.host, r.acquired_at, r.expires_at, dict(r.info or {})), r.expires_at > now)
                for r in rows]


# -- claims -----------------------------------------------------------------------------------------

def _claim_of(row: Any) -> Claim:
    return Claim(row.run_number, row.agent, row.host, row.claimed_at, row.submitted_at, row.stop_requested_at,
                 row.stop_sent_at)


def claim(store: SqlStore, number: int, gpus: Sequence[int], agent: str, host: str | None) -> Run | None:
    """Move a queued run to starting, held by ``agent``; None if someone else claimed it first."""
    with store._write() as conn:
        row = conn.execute(sa.select(_R.status, _R.resources).where(_R.number == number)
                           .with_for_update()).one_or_none()
        if row is None or row.status != RunStatus.QUEUED.value:
            return None
        resources = {**(row.resources or {}), "assigned_gpus": list(gpus)}
        runs_sql.update_run(conn, number, RunPatch(status=RunStatus.STARTING), store.clock,
                            extra={"resources": resources})
        conn.execute(sa.delete(run_claims).where(_C.run_number == number))
        conn.execute(sa.insert(run_claims).values(run_number=number, agent=agent, host=host,
                                                  claimed_at=store.lease_clock(conn)))
        return runs_sql.fetch_runs(conn, _R.number == number)[0]


def mark_submitted(store: SqlStore, number: int, agent: str) -> bool:
    """Record that the holder hands the run to a supervisor now. False (hand it nothing) when the run
    is no longer this agent's, or a stop was requested before it started."""
    with store._write() as conn:
        done = conn.execute(sa.update(run_claims).where(
            _C.run_number == number, _C.agent == agent, _C.submitted_at.is_(None), _C.stop_requested_at.is_(None),
        ).values(submitted_at=store.lease_clock(conn))).rowcount
        return bool(done)


def get_claim(store: SqlStore, number: int) -> Claim | None:
    with store._read() as conn:
        row = conn.execute(sa.select(run_claims).where(_C.run_number == number)).one_or_none()
        return _claim_of(row) if row is not None else None


def _claimed_runs(conn: Connection, where: sa.ColumnElement[bool]) -> list[tuple[Run, Claim]]:
    rows = conn.execute(sa.select(run_claims).select_from(run_claims.join(runs, _R.number == _C.run_number))
                        .where(_R.status.in_(_ACTIVE), where).order_by(_R.number)).all()
    if not rows:
        return []
    found = {r.number: r for part in limits.batches(conn, [r.run_number for r in rows])
             for r in runs_sql.fetch_runs(conn, _R.number.in_(part))}
    return [(found[r.run_number], _claim_of(r)) for r in rows if r.run_number in found]


def held_by(store: SqlStore, agent: str) -> list[tuple[Run, Claim]]:
    """The starting and running runs ``agent`` holds, with their claims."""
    with store._read() as conn:
        return _claimed_runs(conn, _C.agent == agent)


def orphaned(store: SqlStore) -> list[tuple[Run, Claim]]:
    """Starting and running runs whose holder's lease has expired (or never existed)."""
    holder = sa.select(_L.expires_at).where(_L.name == sa.literal(AGENT_LEASE) + _C.agent).scalar_subquery()
    with store._read() as conn:
        now = store.lease_clock(conn)
        return _claimed_runs(conn, sa.or_(holder.is_(None), holder <= now))


def _claim_if_gone(conn: sa.Connection, number: int, agent: str, now: float | None) -> Any:
    """The claim of run ``number``, locked, if ``agent`` still holds it and its lease has lapsed by
    ``now`` (None: whatever the lease says); else None."""
    held = conn.execute(sa.select(run_claims).where(_C.run_number == number).with_for_update()).one_or_none()
    if held is None or held.agent != agent:
        return None
    if now is not None:
        expires = conn.execute(sa.select(_L.expires_at).where(_L.name == agent_lease(agent))).scalar()
        if expires is not None and expires > now:
            return None
    return held


def release_orphan(store: SqlStore, number: int, agent: str, lost_message: str,
                   holder_gone: bool = True) -> RunStatus | None:
    """Act on a run whose holder ``agent`` is gone, if it still is: queue it again if it was never
    handed to a supervisor (stop it instead if a stop was asked for), else mark it lost. Returns the
    run's new status, or None if nothing was done (the holder came back, or someone acted first).
    ``holder_gone=False``: the holder itself, restarted, releases what its previous life claimed."""
    with store._write() as conn:
        held = _claim_if_gone(conn, number, agent, store.lease_clock(conn) if holder_gone else None)
        if held is None:
            return None
        row = conn.execute(sa.select(_R.status, _R.resources).where(_R.number == number).with_for_update()).one()
        if row.status not in _ACTIVE:
            return None
        if held.submitted_at is None and row.status == RunStatus.STARTING.value:
            conn.execute(sa.delete(run_claims).where(_C.run_number == number))
            if held.stop_requested_at is not None:
                runs_sql.update_run(conn, number, RunPatch(status=RunStatus.STOPPED,
                                                           status_message="stopped before it started"), store.clock)
                return RunStatus.STOPPED
            resources = {k: v for k, v in (row.resources or {}).items() if k != "assigned_gpus"}
            runs_sql.update_run(conn, number, RunPatch(status=RunStatus.QUEUED), store.clock,
                                extra={"resources": resources})
            return RunStatus.QUEUED
        runs_sql.update_run(conn, number, RunPatch(status=RunStatus.LOST, status_message=lost_message), store.clock)
        return RunStatus.LOST


def take_over(store: SqlStore, number: int, gone: str, agent: str, host: str | None) -> bool:
    """Move to ``agent`` the claim of an active run whose holder ``gone`` let its lease lapse, if it
    still does (a run on a cluster outlives the agent that sent it there). Stop requests carry over."""
    with store._write() as conn:
        if _claim_if_gone(conn, number, gone, store.lease_clock(conn)) is None:
            return False  # it came back, or another agent was first
        status = conn.execute(sa.select(_R.status).where(_R.number == number)).scalar()
        if status not in _ACTIVE:
            return False
        conn.execute(sa.update(run_claims).where(_C.run_number == number, _C.agent == gone)
                     .values(agent=agent, host=host, stop_sent_at=None))
        return True


def adopt(store: SqlStore, number: int, agent: str, host: str | None, submitted: bool) -> bool:
    """Claim for ``agent`` an active run that has no claim (claimed before claims were recorded)."""
    with store._write() as conn:
        now = store.lease_clock(conn)
        status = conn.execute(sa.select(_R.status).where(_R.number == number).with_for_update()).scalar()
        if status not in _ACTIVE:
            return False
        limits.insert_ignore(conn, run_claims, {"run_number": number, "agent": agent, "host": host,
                                                "claimed_at": now, "submitted_at": now if submitted else None},
                             ["run_number"])
        return conn.execute(sa.select(_C.agent).where(_C.run_number == number)).scalar() == agent


def unclaimed(store: SqlStore, executor: str) -> list[Run]:
    """Starting and running runs of ``executor`` that no agent holds."""
    with store._read() as conn:
        return runs_sql.fetch_runs(conn, sa.and_(
            _R.status.in_(_ACTIVE), _R.executor == executor,
            ~sa.exists(sa.select(_C.run_number).where(_C.run_number == _R.number))))


# -- stopping ---------------------------------------------------------------------------------------

def stop_if_queued(store: SqlStore, number: int, message: str) -> bool:
    """Stop a run that is still queued; False if an agent claimed it meanwhile (or it is not queued)."""
    with store._write() as conn:
        status = conn.execute(sa.select(_R.status).where(_R.number == number).with_for_update()).scalar()
        if status != RunStatus.QUEUED.value:
            return False
        runs_sql.update_run(conn, number, RunPatch(status=RunStatus.STOPPED, status_message=message), store.clock)
        return True


def request_stop(store: SqlStore, number: int) -> Claim | None:
    """Ask the run's holder to stop it (it does on its next tick); the claim, or None if unclaimed."""
    with store._write() as conn:
        conn.execute(sa.update(run_claims).where(_C.run_number == number, _C.stop_requested_at.is_(None))
                     .values(stop_requested_at=store.lease_clock(conn)))
        row = conn.execute(sa.select(run_claims).where(_C.run_number == number)).one_or_none()
        return _claim_of(row) if row is not None else None


def stop_sent(store: SqlStore, number: int) -> None:
    with store._write() as conn:
        conn.execute(sa.update(run_claims).where(_C.run_number == number).values(stop_sent_at=store.lease_clock(conn)))


# -- activity ---------------------------------------------------------------------------------------

def last_activity(store: SqlStore, numbers: Sequence[int]) -> dict[int, float]:
    """When each run last logged a metric point or a log line (for rules about a run going quiet),
    for whichever process applied them."""
    if not numbers:
        return {}
    s, g = metric_series.c, log_lines.c
    # Two levels down: correlated to the outer runs by name (auto-correlation looks one level up only).
    last_line = sa.select(sa.func.max(g.id)).where(g.run_number == _R.number).correlate(runs).scalar_subquery()
    stmt = sa.select(
        _R.number,
        sa.select(sa.func.max(s.last_time)).where(s.run_number == _R.number).scalar_subquery(),
        sa.select(g.time).where(g.id == last_line).scalar_subquery(),
    )
    with store._read() as conn:
        out: dict[int, float] = {}
        for part in limits.batches(conn, list(numbers)):  # every active run: a long list in a big team
            for number, point, line in conn.execute(stmt.where(_R.number.in_(part))):
                times = [t for t in (point, line) if t is not None]
                if times:
                    out[int(number)] = float(max(times))
        return out
