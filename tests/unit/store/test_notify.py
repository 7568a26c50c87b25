"""Writes tell other processes what they changed (PostgreSQL NOTIFY), and a Listener hears it.

Against the real PostgreSQL server: a listening connection of the test's own, and the store's
writes in transactions the test holds open."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from runyard.store import logs_sql, notify
from runyard.store.api import LogLine, RunPatch
from runyard.store.newrun import NewRun
from runyard.store.notify import EVERYTHING, Change, Listener
from runyard.store.sql import SqlStore
from runyard.types import RunStatus

pytestmark = pytest.mark.engines("postgresql")


@pytest.fixture
def heard(store: SqlStore) -> Iterator[psycopg.Connection[Any]]:
    """A connection of the test's own that LISTENs on the store's channel."""
    cargs, cparams = store.engine.dialect.create_connect_args(store.engine.url)
    conn = psycopg.connect(*cargs, **cparams, autocommit=True)
    schema = conn.execute("SELECT current_schema()").fetchone()
    assert schema is not None
    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(notify.channel(schema[0]))))
    yield conn
    conn.close()


def changes(conn: psycopg.Connection[Any], timeout: float = 0.3) -> list[Change]:
    return [notify.decode(n.payload) for n in conn.notifies(timeout=timeout)]


def test_a_write_is_told_when_it_commits_never_before(store: SqlStore, heard: psycopg.Connection[Any]) -> None:
    run = store.create_run(NewRun(project="p", status=RunStatus.RUNNING))
    assert changes(heard) == [Change(frozenset({run.number}), frozenset({"p"}))]  # created: the listing too
    with store._write() as conn:
        logs_sql.append(conn, run.number, [LogLine(time.time(), "hello", "stdout")])
        assert changes(heard) == []  # not committed yet: nobody may read it, so nobody is told
    assert changes(heard) == [Change(frozenset({run.number}))]  # a log line: not the project's listing
    store.update_run(run.number, RunPatch(status=RunStatus.FINISHED))
    assert changes(heard) == [Change(frozenset({run.number}), frozenset({"p"}))]


def test_a_write_that_rolls_back_tells_nobody(store: SqlStore, heard: psycopg.Connection[Any]) -> None:
    run = store.create_run(NewRun(project="p", status=RunStatus.RUNNING))
    changes(heard)
    with pytest.raises(RuntimeError), store._write() as conn:
        logs_sql.append(conn, run.number, [LogLine(time.time(), "never", "stdout")])
        raise RuntimeError("the writer failed half way")
    store.ensure_project("q")  # a write that touches no run: nothing to tell either
    assert changes(heard) == []


def test_many_runs_in_one_transaction_are_told_as_everything(store: SqlStore,
                                                             heard: psycopg.Connection[Any]) -> None:
    with store._write() as conn:  # PostgreSQL refuses a payload of 8,000 bytes: these numbers need more
        for number in range(1_000_000, 1_002_000):
            notify.touch(conn, number)
    assert changes(heard) == [EVERYTHING]
    assert notify.encode(Change(frozenset(range(10**6, 10**6 + 800)))) != notify.EVERYTHING_PAYLOAD
    assert notify.encode(Change(frozenset(range(10**6, 10**6 + 1000)))) == notify.EVERYTHING_PAYLOAD


def test_a_payload_it_cannot_read_is_everything() -> None:
    assert notify.decode("not json") == EVERYTHING
    assert notify.decode('{"runs": [1]}') == EVERYTHING  # another version's shape
    change = Change(frozenset({3, 1}), frozenset({"a \"quoted\" é"}))
    assert notify.decode(notify.encode(change)) == change


def test_channels_are_per_schema_and_short_enough_to_name() -> None:
    assert notify.channel("a") != notify.channel("b")
    long = "s" * 200
    assert len(notify.channel(long).encode()) <= 63 and notify.channel(long) != notify.channel(long + "t")


def test_the_listener_hears_writes_and_reconnects_after_its_connection_is_ended(store: SqlStore) -> None:
    got: list[Change] = []
    arrived = threading.Condition()

    def hear(change: Change) -> None:
        with arrived:
            got.append(change)
            arrived.notify_all()

    def wait_for(predicate: Any, timeout: float = 5.0) -> None:
        with arrived:
            assert arrived.wait_for(lambda: predicate(got), timeout), got

    listener = Listener(store.engine, hear).start()
    try:
        wait_for(lambda g: g == [EVERYTHING])  # on connecting: whatever was written before
        run = store.create_run(NewRun(project="p", status=RunStatus.RUNNING))
        wait_for(lambda g: Change(frozenset({run.number}), frozenset({"p"})) in g)
        first = listener.backend_pid
        assert first is not None
        with store.engine.connect() as conn:
            conn.exec_driver_sql(f"SELECT pg_terminate_backend({first})")
        store.append_logs(run.number, [LogLine(time.time(), "while nobody listened", "stdout")])
        # The write above may have happened before the new LISTEN: "everything" covers it.
        wait_for(lambda g: g.count(EVERYTHING) == 2)
        assert listener.connections == 2 and listener.backend_pid not in (None, first)
        store.append_logs(run.number, [LogLine(time.time(), "after", "stdout")])
        wait_for(lambda g: g[-1] == Change(frozenset({run.number})))
    finally:
        listener.stop()
        listener.join(5)
    assert listener.backend_pid is None
