"""Leases, claims and stop requests on both engines: the store's half of many agents on one queue."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from runyard.store.api import AlertEvent
from runyard.store.engine import create_engine
from runyard.store.migrate import upgrade
from runyard.store.newrun import NewRun
from runyard.store.sql import SqlStore
from runyard.types import RunStatus


@pytest.fixture
def timed(db_url: str) -> Iterator[tuple[SqlStore, list[float]]]:
    """A store whose clock the test moves (leases then follow it on both engines)."""
    engine = create_engine(db_url)
    upgrade(engine)
    now = [1000.0]
    store = SqlStore(engine, clock=lambda: now[0])
    yield store, now
    store.close()


def queued(store: SqlStore) -> int:
    return store.create_run(NewRun(project="p", status=RunStatus.QUEUED, executor="local", command=["true"])).number


def test_a_lease_is_held_until_it_expires_then_another_may_take_it(timed: tuple[SqlStore, list[float]]) -> None:
    store, now = timed
    assert store.take_lease("outbox", "a", 10, "host-a", {"pid": 1})
    assert not store.take_lease("outbox", "b", 10)
    now[0] += 9
    assert store.take_lease("outbox", "a", 10)  # renewed: good until 1019
    now[0] += 9
    assert not store.take_lease("outbox", "b", 10)
    now[0] += 2
    assert store.take_lease("outbox", "b", 10)
    assert [(lease.holder, live) for lease, live in store.leases("outbox")] == [("b", True)]
    store.release_lease("outbox", "a")  # not a's any more: nothing happens
    assert store.leases("outbox")[0][0].holder == "b"
    store.release_lease("outbox", "b")
    assert store.leases("outbox") == [] and store.take_lease("outbox", "a", 10)
    store.take_lease("agent:x", "x", 10, info={"gpus": 2})
    store.release_lease("agent:x", "x", keep=True)  # expired, but what it says stays known
    [(lease, live)] = store.leases("agent:")
    assert lease.info == {"gpus": 2} and not live


def test_a_run_is_claimed_once_and_its_holder_is_recorded(timed: tuple[SqlStore, list[float]]) -> None:
    store, _ = timed
    number = queued(store)
    run = store.claim(number, [1], "agent-a", "host-a")
    assert run is not None and run.status is RunStatus.STARTING and run.resources["assigned_gpus"] == [1]
    assert store.claim(number, [], "agent-b", "host-b") is None
    claim = store.get_claim(number)
    assert claim is not None and (claim.agent, claim.host, claim.submitted_at) == ("agent-a", "host-a", None)
    assert [r.number for r, _ in store.held_by("agent-a")] == [number] and store.held_by("agent-b") == []
    assert not store.mark_submitted(number, "agent-b")
    assert store.mark_submitted(number, "agent-a")
    assert not store.mark_submitted(number, "agent-a")  # once


def test_runs_of_an_agent_whose_lease_expired_are_queued_again_or_lost(timed: tuple[SqlStore, list[float]]) -> None:
    store, now = timed
    never_started, started, stop_asked = queued(store), queued(store), queued(store)
    store.take_lease("agent:a", "a", 10)
    for number in (never_started, started, stop_asked):
        store.claim(number, [0], "a", "host-a")
    store.mark_submitted(started, "a")
    store.request_stop(stop_asked)
    assert store.orphaned_runs() == []
    now[0] += 11
    assert sorted(r.number for r, _ in store.orphaned_runs()) == [never_started, started, stop_asked]
    store.take_lease("agent:a", "a", 10)  # it came back before anyone acted: nothing to do
    assert store.orphaned_runs() == []
    assert store.release_orphan(started, "a", "gone") is None
    now[0] += 11
    assert store.release_orphan(never_started, "a", "gone") is RunStatus.QUEUED
    assert store.release_orphan(started, "a", "its agent's lease expired") is RunStatus.LOST
    assert store.release_orphan(stop_asked, "a", "gone") is RunStatus.STOPPED
    assert store.release_orphan(started, "a", "gone") is None  # done once
    requeued = store.get_run(never_started)
    assert requeued.status is RunStatus.QUEUED and "assigned_gpus" not in requeued.resources
    assert store.get_claim(never_started) is None
    lost = store.get_run(started)
    assert lost.status is RunStatus.LOST and lost.status_message == "its agent's lease expired"
    assert store.claim(never_started, [], "b", "host-b") is not None


def test_a_stop_requested_before_the_run_started_keeps_it_from_starting(timed: tuple[SqlStore, list[float]]) -> None:
    store, _ = timed
    number = queued(store)
    assert store.request_stop(number) is None  # queued: nobody holds it
    store.claim(number, [], "a", "host-a")
    claim = store.request_stop(number)
    assert claim is not None and claim.agent == "a" and claim.stop_requested_at is not None
    assert not store.mark_submitted(number, "a")
    other = queued(store)
    assert store.stop_if_queued(other, "stopped while queued")
    assert store.get_run(other).status is RunStatus.STOPPED
    assert not store.stop_if_queued(number, "stopped while queued")  # claimed: not queued any more


def test_alert_states_are_written_by_compare_and_set_with_their_events(store: SqlStore) -> None:
    number = store.create_run(NewRun(project="p")).number
    event = AlertEvent(number, "below", "acc low", 1.0, None)
    assert store.save_alert_states(number, {7: ({"fired_at": 1.0}, None)}, [event]) == []
    assert store.alert_states(number) == {7: ({"fired_at": 1.0}, 1)}
    # A second process that read nothing (or version 0) and fires too: refused, nothing written.
    assert store.save_alert_states(number, {7: ({"fired_at": 2.0}, None)}, [event]) == [7]
    assert store.save_alert_states(number, {7: ({"fired_at": 2.0}, 1), 8: ({"best": 3}, None)}, [event]) == []
    assert store.save_alert_states(number, {8: ({"best": 4}, None)}, []) == [8]
    assert store.alert_states(number) == {7: ({"fired_at": 2.0}, 2), 8: ({"best": 3}, 1)}
    assert len(store.list_alert_events(number)) == 2
