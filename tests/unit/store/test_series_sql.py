"""The envelope is exact over the raw points, on both engines, whatever the order points arrive in.

A brute-force model keeps every appended point; each returned bucket is checked against the model's
points in the bucket's step range. Spikes, NaN and infinities are drawn on purpose.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runyard.errors import InvalidArgument, NotFound
from runyard.store.api import NewRun
from runyard.store.series import Points
from runyard.store.sql import SqlStore


class Model:
    """Every point ever appended, in arrival order; sorted stably by step on demand."""

    def __init__(self) -> None:
        self.steps: list[int] = []
        self.values: list[float] = []
        self.times: list[float] = []

    def add(self, steps: list[int], values: list[float], times: list[float]) -> None:
        # Within one append, points with equal steps keep the order they were given in.
        order = sorted(range(len(steps)), key=lambda i: steps[i])
        self.steps += [steps[i] for i in order]
        self.values += [values[i] for i in order]
        self.times += [times[i] for i in order]

    def sorted(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        s = np.array(self.steps, np.int64)
        order = np.argsort(s, kind="stable")
        return s[order], np.array(self.values)[order], np.array(self.times)[order]


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def check_envelope(store: SqlStore, run: int, model: Model, buckets: int, start: int | None,
                   end: int | None) -> None:
    steps, values, _ = model.sorted()
    env = store.envelope(run, "m", buckets=buckets, start=start, end=end)
    lo = steps[0] if start is None else start
    hi = steps[-1] if end is None else end
    in_range = (steps >= lo) & (steps <= hi)
    assert len(env) <= buckets
    assert int(env.count.sum()) == int(in_range.sum())
    previous_end = None
    for b in env.to_rows():
        assert b["start_step"] <= b["end_step"]
        assert lo <= b["start_step"] and b["end_step"] <= hi
        if previous_end is not None:
            assert b["start_step"] > previous_end
        previous_end = b["end_step"]
        mask = (steps >= b["start_step"]) & (steps <= b["end_step"])
        v = values[mask]
        finite = v[~np.isnan(v)]
        assert b["count"] == v.shape[0]
        assert b["nan_count"] == v.shape[0] - finite.shape[0]
        assert same(b["last"], float(v[-1]))
        if finite.shape[0] == 0:
            assert math.isnan(b["min"]) and math.isnan(b["max"]) and math.isnan(b["mean"])
            continue
        assert b["min"] == finite.min()
        assert b["max"] == finite.max()
        with np.errstate(invalid="ignore"):
            expected = float(finite.sum() / finite.shape[0])
        if math.isnan(expected) or math.isinf(expected):
            assert same(b["mean"], expected)
        else:
            assert abs(b["mean"] - expected) <= 1e-9 * max(1.0, float(np.abs(finite).max()))


values_st = st.one_of(
    st.floats(-10, 10, allow_nan=False),
    st.sampled_from([math.nan, math.inf, -math.inf, 1e12, -1e12]),  # spikes and non-finite values
)
batch_st = st.lists(st.tuples(st.integers(0, 400), values_st), min_size=1, max_size=60)


@pytest.mark.parametrize("monotonic", [True, False], ids=["in-order", "any-order"])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(batch_st, min_size=1, max_size=6), data=st.data())
def test_envelope_is_exact_over_raw_points(
    store: SqlStore, monotonic: bool, batches: list, data: st.DataObject
) -> None:
    run = store.create_run(NewRun(project="p")).number
    model = Model()
    offset = 0
    for batch in batches:
        steps = [s for s, _ in batch]
        if monotonic:
            steps = [offset + s for s in sorted(steps)]
            offset = steps[-1]
        values = [v for _, v in batch]
        times = [1_700_000_000.0 + i * 0.001 for i in range(len(steps))]
        store.append_points(run, {"m": Points.of(steps, times, values)})
        model.add(steps, values, times)
    all_steps = model.sorted()[0]
    for _ in range(4):
        buckets = data.draw(st.integers(1, 50))
        start = data.draw(st.none() | st.integers(int(all_steps[0]) - 5, int(all_steps[-1]) + 5))
        end = data.draw(st.none() | st.integers(start if start is not None else int(all_steps[0]),
                                                int(all_steps[-1]) + 5))
        check_envelope(store, run, model, buckets, start, end)
    history = store.history(run, "m")
    steps, values, times = model.sorted()
    assert history.steps.tolist() == steps.tolist()
    assert all(same(a, b) for a, b in zip(history.values.tolist(), values.tolist(), strict=True))
    assert np.allclose(history.times, times, atol=1e-6, rtol=0)


def test_envelope_of_a_long_series_uses_every_level(store: SqlStore) -> None:
    # chunk_points=4 and FANOUT=8: 40,000 points make 10,000 chunks and four levels of blocks.
    run = store.create_run(NewRun(project="p")).number
    rng = np.random.default_rng(7)
    model = Model()
    for begin in range(0, 40_000, 5_000):
        steps = list(range(begin, begin + 5_000))
        values = rng.normal(size=5_000).tolist()
        values[rng.integers(5_000)] = 1e6  # a spike that must survive every zoom level
        values[rng.integers(5_000)] = math.nan
        times = [0.0] * 5_000
        store.append_points(run, {"m": Points.of(steps, times, values)})
        model.add(steps, values, times)
    for buckets, start, end in [(1000, None, None), (100, None, None), (7, None, None), (1000, 123, 38_777),
                                (50, 10_001, 10_401), (3, 0, 0), (1000, 39_990, 50_000)]:
        check_envelope(store, run, model, buckets, start, end)
    env = store.envelope(run, "m", buckets=10)
    assert env.max.max() == 1e6


def test_steps_restarting_from_a_checkpoint_rewrite_only_the_overlap(store: SqlStore) -> None:
    # A resumed run logs steps 80..150 again after reaching 200: both sets of points are kept.
    run = store.create_run(NewRun(project="p")).number
    model = Model()
    for steps in (list(range(0, 200)), list(range(80, 150))):
        values = [float(s) for s in steps]
        store.append_points(run, {"m": Points.of(steps, [0.0] * len(steps), values)})
        model.add(steps, values, [0.0] * len(steps))
    check_envelope(store, run, model, 20, None, None)
    assert store.list_series(run)[0].count == 270


def test_series_bookkeeping_and_errors(store: SqlStore) -> None:
    run = store.create_run(NewRun(project="p")).number
    t = time.time()
    store.append_points(run, {"loss": Points.of([0, 1, 2], [t, t + 1, t + 2], [3.0, 2.0, math.nan]),
                              "acc": Points.of([0], [t], [0.5])})
    info = {s.key: s for s in store.list_series(run)}
    assert info["loss"].count == 3 and info["loss"].last_step == 2
    assert math.isnan(info["loss"].last_value)
    assert info["acc"].last_value == 0.5
    with pytest.raises(NotFound, match="no metric 'nope'"):
        store.envelope(run, "nope")
    with pytest.raises(NotFound, match="no run number 999"):
        store.append_points(999, {"loss": Points.of([0], [t], [1.0])})
    with pytest.raises(InvalidArgument, match="buckets"):
        store.envelope(run, "loss", buckets=0)
    with pytest.raises(InvalidArgument, match="after end"):
        store.envelope(run, "loss", start=5, end=1)
    assert len(store.envelope(run, "loss", start=100, end=200)) == 0
