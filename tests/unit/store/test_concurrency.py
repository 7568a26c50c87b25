"""Several processes writing to one store at once: nothing is lost and nobody sees "database is locked"."""

from __future__ import annotations

import multiprocessing

import numpy as np

from runyard.store.api import LogLine, NewRun
from runyard.store.engine import create_engine
from runyard.store.series import Points
from runyard.store.sql import SqlStore

WRITERS = 4
BATCHES = 25
BATCH = 200


def _writer(args: tuple[str, int, int]) -> int:
    url, run, index = args
    store = SqlStore(create_engine(url), chunk_points=64)
    for b in range(BATCHES):
        steps = np.arange(b * BATCH, (b + 1) * BATCH)
        # Every writer appends to a series of its own and to one series they all share.
        store.append_points(run, {f"own/{index}": Points(steps, steps * 1.0, steps * 1.0),
                                  "shared": Points(steps, steps * 1.0, np.full(BATCH, float(index)))})
        store.append_logs(run, [LogLine(0.0, f"writer {index} batch {b}")])
    store.close()
    return index


def test_concurrent_writers_lose_nothing(store: SqlStore, db_url: str) -> None:
    run = store.create_run(NewRun(project="p")).number
    with multiprocessing.get_context("spawn").Pool(WRITERS) as pool:
        assert sorted(pool.map(_writer, [(db_url, run, i) for i in range(WRITERS)])) == list(range(WRITERS))
    series = {s.key: s.count for s in store.list_series(run)}
    assert series == {**{f"own/{i}": BATCHES * BATCH for i in range(WRITERS)}, "shared": WRITERS * BATCHES * BATCH}
    shared = store.history(run, "shared")
    assert np.all(np.diff(shared.steps) >= 0)
    assert sorted(np.bincount(shared.values.astype(int)).tolist()) == [BATCHES * BATCH] * WRITERS
    assert len(store.read_logs(run, limit=10_000)) == WRITERS * BATCHES
    env = store.envelope(run, "shared", buckets=10)
    assert int(env.count.sum()) == WRITERS * BATCHES * BATCH
