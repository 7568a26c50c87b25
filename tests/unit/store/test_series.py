"""The chunk codec and chunking rules (pure, no database)."""

from __future__ import annotations

import itertools
import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from runyard.store.series import Points, Stats, decode_chunk, decode_steps_values, encode_chunk, pack_chunks


@given(
    steps=st.lists(st.integers(-(2**40), 2**40), min_size=1, max_size=300),
    regular=st.booleans(),
    data=st.data(),
)
def test_a_chunk_decodes_to_exactly_what_was_encoded(steps: list[int], regular: bool, data: st.DataObject) -> None:
    if regular:  # the common case, stored as first step and stride
        stride = data.draw(st.integers(0, 1000))
        steps = [steps[0] + i * stride for i in range(len(steps))]
    values = data.draw(st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=len(steps),
                                max_size=len(steps)))
    times = [1.7e9 + i * 0.123456 for i in range(len(steps))]
    points = Points.of(steps, times, values)
    back = decode_chunk(encode_chunk(points))
    assert back.steps.tolist() == points.steps.tolist()
    assert [v if not math.isnan(v) else "nan" for v in back.values.tolist()] == \
        [v if not math.isnan(v) else "nan" for v in points.values.tolist()]
    assert np.allclose(back.times, points.times, atol=1e-6, rtol=0)  # microsecond resolution
    only_steps, only_values = decode_steps_values(encode_chunk(points))
    assert only_steps.tolist() == points.steps.tolist() and only_values.tobytes() == points.values.tobytes()


def test_regular_steps_take_sixteen_bytes() -> None:
    n = 1024
    regular = encode_chunk(Points.of(np.arange(0, 2 * n, 2), np.zeros(n), np.zeros(n)))
    irregular = encode_chunk(Points.of(np.arange(n) ** 2, np.zeros(n), np.zeros(n)))
    assert len(regular) < len(irregular)


@given(st.lists(st.integers(0, 20), min_size=1, max_size=200), st.integers(1, 16))
def test_chunks_never_split_a_step(steps: list[int], size: int) -> None:
    points = Points.of(steps, [0.0] * len(steps), list(range(len(steps))))
    chunks = points.chunks(size)
    assert sum(len(c) for c in chunks) == len(points)
    for before, after in itertools.pairwise(chunks):
        assert before.steps[-1] < after.steps[0]
        assert len(before) >= size  # only a repeated step makes a chunk longer than size
    # Stable: points with the same step keep their arrival order.
    assert np.concatenate([c.values for c in chunks]).tolist() == points.values.tolist()
    assert points.values.tolist() == sorted(range(len(steps)), key=lambda i: steps[i])


@given(st.integers(1, 9), st.booleans(), st.data())
def test_chunks_packed_at_once_are_the_bytes_and_aggregates_of_each_chunk_alone(
        size: int, repeats: bool, data: st.DataObject) -> None:
    """Ingest packs all of an append's chunks in one go (``pack_chunks``): what it stores must be what
    encoding each chunk alone stores, for regular and irregular steps, repeated steps, NaN and
    infinities alike."""
    gaps = data.draw(st.lists(st.integers(0 if repeats else 1, 3), max_size=120))
    steps = list(itertools.accumulate(gaps, initial=data.draw(st.integers(-5, 5))))
    values = data.draw(st.lists(st.sampled_from([0.0, -0.0, 1.5, -2.25, 1e300, math.nan, math.inf, -math.inf])
                                | st.floats(-1e6, 1e6), min_size=len(steps), max_size=len(steps)))
    times = data.draw(st.lists(st.floats(1.7e9, 1.8e9), min_size=len(steps), max_size=len(steps)))
    points = Points.of(steps, times, values)
    datas, stats = pack_chunks(points, size)
    pieces = points.chunks(size)
    assert datas == [encode_chunk(p) for p in pieces]
    assert len(stats) == len(pieces)
    for got, piece in zip(stats, pieces, strict=True):
        want = Stats.of(piece)
        for name in ("first_step", "last_step", "count", "nan_count"):
            assert getattr(got, name) == getattr(want, name)
        for name in ("vmin", "vmax", "vsum", "vlast"):
            a, b = getattr(got, name), getattr(want, name)
            assert (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b)), \
                (name, a, b)
