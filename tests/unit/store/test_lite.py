"""The stdlib fast path writes and reads exactly what SqlStore does."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

from runyard.store.api import NewRun, RunPatch
from runyard.store.engine import create_engine
from runyard.store.lite import LiteStore, PostgresListing
from runyard.store.migrate import upgrade
from runyard.store.series import Points
from runyard.store.sql import SqlStore
from runyard.types import RunKind, RunStatus


def test_a_run_queued_through_the_fast_path_reads_back_like_any_other(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    assert LiteStore.open(url) is None  # no database yet: callers take the full path, which creates it
    engine = create_engine(url)
    upgrade(engine)
    store = SqlStore(engine)
    new = NewRun(project="p", status=RunStatus.QUEUED, name="fast", command=["python", "t.py"],
                 config={"lr": 0.1, "deep": {"x": [1, 2]}, "bad": math.inf}, labels=["b", "a"], notes="n",
                 resources={"gpus": 1}, priority=3, executor="local", snapshot_id="sha256:" + "0" * 64,
                 git_commit="abc", launch={"argv": ["python", "t.py"], "shell": False, "env": {"A": "1"}},
                 kind=RunKind.NOTEBOOK)
    lite = LiteStore.open(url)
    assert lite is not None
    number, run_id = lite.create_run(new, now=100.0)
    slow = store.create_run(replace(new, name="slow", created_at=100.0))
    fast = store.get_run(number)
    assert fast.id == run_id
    differing = {"number", "id", "name"}
    assert {k: v for k, v in vars(fast).items() if k not in differing} == \
           {k: v for k, v in vars(slow).items() if k not in differing}
    store.append_points(number, {"loss": Points.of([0, 1], [0.0, 1.0], [2.0, 1.5]),
                                 "system/cpu_percent": Points.of([0], [0.0], [50.0])})
    store.update_run(slow.number, RunPatch(status=RunStatus.STARTING))  # as its agent claims it
    store.update_run(slow.number, RunPatch(status=RunStatus.RUNNING))
    active = lite.active_runs()
    assert [(a.number, a.status.value) for a in active] == [(slow.number, "running"), (number, "queued")]
    assert active[1].latest == {"loss": 1.5} and active[1].resources == {"gpus": 1}
    assert [a.kind for a in active] == [RunKind.NOTEBOOK, RunKind.NOTEBOOK]
    assert lite.count_queued() == 1
    lite.close()
    store.close()


def test_runyard_ls_through_the_fast_path_lists_what_the_store_lists(db_url: str) -> None:
    """On SQLite through sqlite3, on PostgreSQL through psycopg: the same rows as SqlStore's."""
    from runyard.store.api import RunQuery

    url = db_url
    engine = create_engine(url)
    upgrade(engine)
    store = SqlStore(engine)
    for n in range(12):
        run = store.create_run(NewRun(project="p" if n % 3 else "q", name=f"r{n}", labels=["a", "b"][: n % 3],
                                      status=RunStatus.RUNNING if n % 4 else RunStatus.QUEUED,
                                      kind=list(RunKind)[n % 3 if n % 2 else 0]))
        if n % 5 == 0:
            if run.status is RunStatus.QUEUED:  # claimed first, as every queued run is before it ends
                store.update_run(run.number, RunPatch(status=RunStatus.STARTING))
            store.update_run(run.number, RunPatch(status=RunStatus.FINISHED))
    lite = LiteStore.open(url) or PostgresListing.open(url)
    assert lite is not None
    for project, labels, statuses, descending, limit, kinds in [
            (None, [], [], True, 50, []), ("p", [], [], True, 3, []), (None, ["a"], [], False, 50, []),
            (None, ["a", "b"], ["running", "finished"], True, 50, []), ("q", ["b"], ["queued"], False, 1, []),
            (None, [], [], True, 50, ["jupyterlab"]), ("p", [], ["running"], False, 50, ["notebook", "script"])]:
        full = store.list_runs(RunQuery(project=project, labels=labels, status=[RunStatus(s) for s in statuses],
                                        kinds=[RunKind(k) for k in kinds], descending=descending, limit=limit)).items
        fast = lite.list_runs(project, labels, statuses, descending, limit, kinds)
        assert [(r.number, r.name, r.project, r.status, r.labels, r.created_at, r.started_at, r.ended_at, r.kind)
                for r in fast] == [(r.number, r.name, r.project, r.status, r.labels, r.created_at, r.started_at,
                                    r.ended_at, r.kind) for r in full], (project, labels, statuses, kinds)
        if kinds:
            assert fast and {r.kind.value for r in fast} <= set(kinds)
    lite.close()
    store.close()


def test_the_postgresql_listing_leaves_a_database_not_at_this_schema_to_the_full_path(pg_schema_url: str) -> None:
    assert PostgresListing.open(pg_schema_url) is None  # empty: the full path migrates or explains
    assert PostgresListing.open("postgresql+psycopg://nobody@127.0.0.1:1/none") is None  # unreachable
    assert PostgresListing.open("sqlite:///x.db") is None
