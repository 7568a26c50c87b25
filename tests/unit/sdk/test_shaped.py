"""log()'s frames made by a function for one set of names: the same record msgpack would make, read
back alike record by record and as columns, and never made for a call that needs checking."""

from __future__ import annotations

import time
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.unit.ingest.test_columns import as_columns, one_by_one, same

from runyard.ingest import columns
from runyard.sdk.shaped import MAX_NAMES, encoder_for
from runyard.spool.segment import encode_header, read_header, scan

NAMES = ["loss", "acc", "x" * 31, "y" * 32, "z" * 300, "grad/layer.0", "é" * 20] + [f"k{i}" for i in range(70)]
FLOATS = st.floats(allow_nan=True, allow_infinity=True)


def spool_of(frames: list[bytes]) -> bytes:
    return encode_header("01J0000000000000000000000A", "w1", 3) + b"".join(frames)


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_a_frame_holds_the_record_msgpack_would_and_reads_back_as_columns(data: st.DataObject) -> None:
    names = tuple(data.draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=MAX_NAMES, unique=True)))
    encode = encoder_for(names)
    first = data.draw(st.one_of(st.integers(0, 127), st.integers(0, 2**40), st.integers(2**64 - 50, 2**64 - 1)))
    logged = []
    before = time.time()
    for i in range(data.draw(st.integers(1, 30))):
        metrics = {name: data.draw(FLOATS) for name in names}
        step = min(first + i, 2**64 - 1)
        frame = encode(metrics, step)
        assert frame is not None
        logged.append((metrics, step, frame))
    raw = spool_of([frame for _, _, frame in logged])
    header = read_header(raw)
    assert header is not None
    found = scan(memoryview(raw)[header.size :], header.size, 2, final=True, eof=True)
    assert len(found.frames) == len(logged) and found.skipped == 0  # every checksum holds
    for (metrics, step, _), (_, payload) in zip(logged, found.frames, strict=True):
        record = msgpack.unpackb(payload)
        assert same(record[0], metrics) and list(record[0]) == list(names)
        assert record[1] == 0 and before <= record[2] <= time.time() and record[3] == step
    assert same(columns.to_records(as_columns(raw)), one_by_one(raw))


def test_a_training_loop_reads_back_as_one_block_of_columns() -> None:
    encode = encoder_for(("loss", "acc"))
    frames = [encode({"loss": 1.0 / (i + 1), "acc": i * 1e-5}, i) for i in range(3000)]
    got = as_columns(spool_of([f for f in frames if f is not None]))
    assert [type(part).__name__ for part in got] == ["MetricColumns"]
    assert got[0].steps.tolist() == list(range(3000))


class FloatLike(float):
    pass


@pytest.mark.parametrize("metrics, step", [
    ({"loss": 1, "acc": 0.5}, 0),  # an int: converted on the general path
    ({"loss": True, "acc": 0.5}, 0),
    ({"loss": np.float64(1.0), "acc": 0.5}, 0),  # a float subclass
    ({"loss": FloatLike(1.0), "acc": 0.5}, 0),
    ({"loss": 1.0}, 0),  # a name missing
    ({"loss": 1.0, "acc": 0.5, "lr": 0.1}, 0),  # a name more
    ({"loss": 1.0, "ACC": 0.5}, 0),
    ({"loss": 1.0, "acc": 0.5}, -1),  # negative steps are msgpack's signed integers
    ({"loss": 1.0, "acc": 0.5}, 2**64),
])
def test_anything_but_the_names_it_was_made_for_all_floats_is_left_to_the_general_path(
        metrics: dict[str, Any], step: int) -> None:
    assert encoder_for(("loss", "acc"))(metrics, step) is None


def test_the_same_names_in_another_order_make_the_same_record() -> None:
    frame = encoder_for(("loss", "acc"))({"acc": 0.5, "loss": 1.0}, 7)
    assert frame is not None and msgpack.unpackb(frame[12:])[0] == {"loss": 1.0, "acc": 0.5}


def test_more_names_than_a_function_is_made_for_are_refused() -> None:
    with pytest.raises(ValueError):
        encoder_for(tuple(f"k{i}" for i in range(MAX_NAMES + 1)))
