"""Runs of same-shape metrics frames are read as columns: exactly what reading them one by one gives,
whatever the keys, values, steps and shapes, and never a record of another shape taken for one."""

from __future__ import annotations

import math
from typing import Any

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from runyard.ingest import columns
from runyard.ingest.tailer import _decode
from runyard.spool import records
from runyard.spool.segment import encode_frame, encode_header, read_header, scan

KEYS = ["loss", "acc", "lr", "x" * 40, "grad/layer.0", "é"] + [f"k{i}" for i in range(20)]
STEPS = st.one_of(st.integers(0, 127), st.integers(128, 70_000), st.integers(2**31, 2**40), st.integers(-5, -1))
FLOATS = st.floats(allow_nan=True, allow_infinity=True)


class NoQuarantine:
    """The tailer's per-writer state, as far as decoding needs it: nothing may be quarantined."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"decoding quarantined something ({name})")


def spool(recs: list[list[Any]]) -> bytes:
    data = bytearray(encode_header("01J0000000000000000000000A", "w1", 3))
    for rec in recs:
        data += encode_frame(msgpack.packb(rec, use_bin_type=True))
    return bytes(data)


def one_by_one(data: bytes) -> list[Any]:
    header = read_header(data)
    assert header is not None
    found = scan(memoryview(data)[header.size :], header.size, 2, final=True, eof=True)
    out = []
    for offset, payload in found.frames:
        rec = msgpack.unpackb(payload, strict_map_key=False)
        if type(rec[0]) is dict:
            rec[0][records.SEQ], rec[0][records.TIME], rec[0][records.STEP] = (3 << 32) | offset, rec[2], rec[3]
            out.append(rec[0])
        else:
            rec[0] = (3 << 32) | offset
            out.append(rec)
    return out


def as_columns(data: bytes) -> list[Any]:
    header = read_header(data)
    assert header is not None
    found = scan(memoryview(data)[header.size :], header.size, 2, final=True, eof=True, check_run=columns.good_run)
    return _decode(found, 3, 2, NoQuarantine())  # type: ignore[arg-type]


def same(a: list[Any], b: list[Any]) -> bool:
    def norm(value: Any) -> Any:
        if isinstance(value, float) and math.isnan(value):
            return "nan"
        if isinstance(value, dict):
            return {k: norm(v) for k, v in value.items()}
        if isinstance(value, list):
            return [norm(v) for v in value]
        return value

    return norm(a) == norm(b)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_columns_read_exactly_what_reading_one_by_one_reads(data: st.DataObject) -> None:
    recs: list[list[Any]] = []
    for _ in range(data.draw(st.integers(1, 6))):  # runs of one shape, then another
        keys = data.draw(st.lists(st.sampled_from(KEYS), min_size=1, max_size=18, unique=True))
        step = data.draw(STEPS)
        for i in range(data.draw(st.integers(1, 40))):
            values = {k: data.draw(FLOATS) for k in keys}
            if data.draw(st.integers(0, 30)) == 0:
                values[keys[0]] = 3  # an int among floats: not a column
            recs.append([values, 0, 1.7e9 + i, step + i])
            if data.draw(st.integers(0, 40)) == 0:
                recs.append([0, "l", 1.7e9, "stdout", "x" * data.draw(st.integers(0, 60))])
    raw = spool(recs)
    expected = one_by_one(raw)
    got = as_columns(raw)
    assert same(columns.to_records(got), expected)


def test_a_training_loop_becomes_one_block_of_columns() -> None:
    recs = [[{"loss": 1.0 / (i + 1), "acc": i * 1e-5}, 0, 1.7e9 + i, 1000 + i] for i in range(5000)]
    got = as_columns(spool(recs))
    assert [type(part).__name__ for part in got] == ["MetricColumns"]
    part = got[0]
    assert part.keys == ("loss", "acc") and part.steps.tolist() == list(range(1000, 6000))
    assert part.values[:, 0].tolist() == [1.0 / (i + 1) for i in range(5000)]


def test_equal_frames_of_another_shape_are_not_taken_for_the_first() -> None:
    # Same length, different key bytes ("loss" and "lost"): the second run is read record by record.
    first = [[{"loss": 1.0}, 0, 1.7e9, i] for i in range(10)]
    second = [[{"lost": 2.0}, 0, 1.7e9, 10 + i] for i in range(10)]
    raw = spool(first + second)
    got = columns.to_records(as_columns(raw))
    assert [sorted(set(r) - set(records.RESERVED)) for r in got] == [["loss"]] * 10 + [["lost"]] * 10
    assert same(got, one_by_one(raw))
