"""Statements built from caller-sized lists stay within each database's limits, on both engines.

One batch may touch thousands of metric names (``run.log({f"layer{i}/grad_norm": ...})`` over 1,200
layers is ordinary), a run may carry many labels, a queue many runs. SQLite refuses an expression
more than 1,000 levels deep (an OR chain of n terms is n deep) and more bind variables than its build
allows (999 before 3.32, 32,766 since; Debian sets 250,000); PostgreSQL refuses more than 65,535 bind
parameters in one statement.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from sqlalchemy import event

from runyard.ids import new_ulid
from runyard.store.api import IngestBatch, LogLine, NewRun, RunQuery
from runyard.store.engine import create_engine
from runyard.store.lite import LiteStore
from runyard.store.migrate import upgrade
from runyard.store.series import Points
from runyard.store.sql import SqlStore
from runyard.types import RunStatus

WIDE = 5000


def layer_points(names: int, steps: range, shift: float = 0.0) -> dict[str, Points]:
    """``names`` series, each with a point per step; the value tells the series and the step apart."""
    s = np.arange(steps.start, steps.stop, dtype=np.int64)
    return {f"layer{i}/grad_norm": Points.of(s, s * 0.5, i + s / 1000 + shift) for i in range(names)}


def ingest_wide_run(store: SqlStore, names: int) -> int:
    """A run whose every batch touches ``names`` series: a first batch, appends that roll chunks up
    into blocks, and a restart from a checkpoint that rewrites steps already stored; checks that
    every series reads back exactly. Returns the run's number."""
    run_id = new_ulid()
    start = {"project": "wide", "name": "many-layers", "time": 1.0}
    batches = [
        IngestBatch(run_id, "w", 0, 9, start=start, points=layer_points(names, range(0, 34))),
        # Appends that fill the last chunk and start another.
        IngestBatch(run_id, "w", 10, 19, points=layer_points(names, range(34, 40))),
        # Resumed from the checkpoint of step 36: the old points from 36 on stay, the new ones follow them.
        IngestBatch(run_id, "w", 20, 29, points=layer_points(names, range(36, 39), shift=0.25)),
    ]
    number = 0
    for batch in batches:
        number = store.ingest(batch).run_number
    series = store.list_series(number)
    assert len(series) == names and all(s.count == 43 for s in series)
    for i in (0, names // 2, names - 1):
        got = store.history(number, f"layer{i}/grad_norm")
        assert got.steps.tolist() == sorted([*range(40), *range(36, 39)])
        assert got.values[-8:].tolist() == pytest.approx(
            [i + s / 1000 + shift for s, shift in [(35, 0.0), (36, 0.0), (36, 0.25), (37, 0.0), (37, 0.25),
                                                    (38, 0.0), (38, 0.25), (39, 0.0)]])
        envelope = store.envelope(number, f"layer{i}/grad_norm", buckets=3)
        assert int(envelope.count.sum()) == 43
    assert store.list_runs(RunQuery(project="wide")).items[0].number == number
    return number


def test_one_batch_of_5000_metric_names_is_ingested_and_read_back(store: SqlStore) -> None:
    ingest_wide_run(store, WIDE)


@pytest.fixture
def old_sqlite_store(tmp_path: Any) -> Iterator[SqlStore]:
    """A store on a SQLite that allows 999 bind variables, as builds before 3.32 do."""
    engine = create_engine(f"sqlite:///{tmp_path / 'old.db'}")

    @event.listens_for(engine, "connect")
    def _old_default(dbapi_conn: sqlite3.Connection, record: Any) -> None:
        dbapi_conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)

    upgrade(engine)
    store = SqlStore(engine, chunk_points=4)
    yield store
    store.close()


def test_a_sqlite_build_with_999_variables_takes_wide_batches_labels_and_queues(old_sqlite_store: SqlStore) -> None:
    store = old_sqlite_store
    number = ingest_wide_run(store, 1200)
    labels = [f"sweep-{i}" for i in range(1200)]
    assert len(store.set_labels(number, add=labels).labels) == 1200
    assert store.set_labels(number, remove=labels[:1100]).labels == tuple(sorted(labels[1100:]))
    queued = [store.create_run(NewRun(project="q", status=RunStatus.QUEUED, labels=["nightly"])).number
              for _ in range(1100)]
    in_queue = store.runs_with_status([RunStatus.QUEUED])
    assert [r.number for r in in_queue] == queued and all(r.labels == ("nightly",) for r in in_queue)
    assert set(store.last_activity([number, *queued])) == {number}  # alert rules about runs going quiet
    lite = LiteStore.open(str(store.engine.url))  # `runyard ps`: the standard library's path
    assert lite is not None
    lite.conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)
    active = lite.active_runs()
    assert [r.number for r in active] == [number, *queued] and len(active[0].latest) == 1200
    lite.close()


@pytest.mark.engines("postgresql")
def test_a_batch_beyond_65535_bind_parameters_is_ingested_on_postgresql(store: SqlStore) -> None:
    # 17,000 new series rows of 4 columns in one multi-row INSERT would be 68,000 parameters.
    store = SqlStore(store.engine)  # chunks of the usual size: this test is about the number of series
    start = {"project": "wide", "name": "huge", "time": 1.0}
    number = store.ingest(IngestBatch(new_ulid(), "w", 0, 0, start=start,
                                      points=layer_points(17_000, range(0, 2)))).run_number
    series = store.list_series(number)
    assert len(series) == 17_000 and {s.count for s in series} == {2}
    assert store.history(number, "layer16999/grad_norm").steps.tolist() == [0, 1]


def test_a_listing_may_ask_for_many_labels_at_once(store: SqlStore) -> None:
    wanted = [f"tag-{i}" for i in range(1200)]
    both = store.create_run(NewRun(project="p", labels=wanted))
    store.create_run(NewRun(project="p", labels=wanted[:-1]))
    assert [r.number for r in store.list_runs(RunQuery(labels=wanted)).items] == [both.number]


def test_when_runs_last_logged_is_read_for_many_runs(store: SqlStore) -> None:
    # What a "stalled" alert rule reads on every tick, for every running run: a point's time or a
    # line's, whichever is later.
    quiet = [store.create_run(NewRun(project="p")).number for _ in range(3)]
    store.append_points(quiet[0], {"loss": Points.of([0, 1], [5.0, 6.0], [1.0, 0.5])})
    store.append_logs(quiet[1], [LogLine(7.0, "epoch 1", "stdout"), LogLine(8.0, "epoch 2", "stdout")])
    store.append_points(quiet[1], {"loss": Points.of([0], [4.0], [1.0])})
    assert store.last_activity(quiet) == {quiet[0]: 6.0, quiet[1]: 8.0}
