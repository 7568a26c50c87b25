"""log()'s frames made by a function for one set of names: the same record msgpack would make, read
back alike record by record and as columns, and never made for a call that needs checking. Each
test runs on both encoders: the compiled one (sdk/_frames.c) and the Python one."""

from __future__ import annotations

import shutil
import sysconfig
import time
from collections.abc import Callable
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.unit.ingest.test_columns import as_columns, one_by_one, same

from runyard.ingest import columns
from runyard.sdk import shaped
from runyard.sdk.shaped import MAX_NAMES, Encoder, python_encoder_for
from runyard.spool.segment import encode_header, read_header, scan

NAMES = ["loss", "acc", "x" * 31, "y" * 32, "z" * 300, "grad/layer.0", "é" * 20] + [f"k{i}" for i in range(70)]
FLOATS = st.floats(allow_nan=True, allow_infinity=True)
MakeEncoder = Callable[[tuple[str, ...]], Encoder]


@pytest.fixture(params=["compiled", "python"])
def encoder_for(request: pytest.FixtureRequest) -> MakeEncoder:
    if request.param == "python":
        return python_encoder_for
    if shaped._compiled_encoder_type() is None:
        pytest.skip("runyard was installed without its compiled encoder (no C compiler)")
    return shaped.encoder_for


def spool_of(frames: list[bytes]) -> bytes:
    return encode_header("01J0000000000000000000000A", "w1", 3) + b"".join(frames)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_a_frame_holds_the_record_msgpack_would_and_reads_back_as_columns(
        encoder_for: MakeEncoder, data: st.DataObject) -> None:
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


def test_a_training_loop_reads_back_as_one_block_of_columns(encoder_for: MakeEncoder) -> None:
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
        encoder_for: MakeEncoder, metrics: dict[str, Any], step: int) -> None:
    assert encoder_for(("loss", "acc"))(metrics, step) is None


def test_the_same_names_in_another_order_make_the_same_record(encoder_for: MakeEncoder) -> None:
    frame = encoder_for(("loss", "acc"))({"acc": 0.5, "loss": 1.0}, 7)
    assert frame is not None and msgpack.unpackb(frame[12:])[0] == {"loss": 1.0, "acc": 0.5}


def test_more_names_than_a_function_is_made_for_are_refused(encoder_for: MakeEncoder) -> None:
    with pytest.raises(ValueError):
        encoder_for(tuple(f"k{i}" for i in range(MAX_NAMES + 1)))


class RaisingKey(str):
    """A key whose comparison fails: the encoder lets the error through, as a dict lookup would."""

    def __hash__(self) -> int:
        return hash("loss")

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("no comparing")


def test_a_key_that_cannot_be_compared_raises_as_a_dict_lookup_would(
        encoder_for: MakeEncoder) -> None:
    with pytest.raises(RuntimeError, match="no comparing"):
        encoder_for(("loss", "acc"))({RaisingKey("x"): 1.0, "acc": 0.5}, 1)


@settings(max_examples=60, deadline=None)
@given(names=st.lists(st.sampled_from(NAMES), min_size=1, max_size=MAX_NAMES, unique=True),
       values=st.lists(FLOATS, min_size=MAX_NAMES, max_size=MAX_NAMES), step=st.integers(0, 2**64 - 1))
def test_both_encoders_make_the_same_bytes_but_for_the_time(names: list[str], values: list[float], step: int) -> None:
    if shaped._compiled_encoder_type() is None:
        pytest.skip("runyard was installed without its compiled encoder (no C compiler)")
    metrics = dict(zip(names, values, strict=False))
    compiled, python = shaped.encoder_for(tuple(names))(metrics, step), python_encoder_for(tuple(names))(metrics, step)
    assert compiled is not None and python is not None and len(compiled) == len(python)
    # The time is the float64 9 bytes before the step's marker and 8 bytes: 17 from the end.
    time_at = len(compiled) - 17

    def without_time(frame: bytes) -> bytes:
        return frame[4:8] + frame[12:time_at] + frame[time_at + 8:]  # the checksum covers the time

    assert without_time(compiled) == without_time(python)
    assert abs(msgpack.unpackb(compiled[12:])[2] - msgpack.unpackb(python[12:])[2]) < 1.0


@pytest.mark.skipif(shutil.which((sysconfig.get_config_var("CC") or "cc").split()[0]) is None,
                    reason="no C compiler here: the Python encoder is the one log() uses")
def test_the_install_built_the_compiled_encoder_that_log_uses() -> None:
    # A silent fallback to the Python encoder would cost every log() call (bench/logging.py):
    # where a compiler exists, `make install` must have built the module.
    assert type(shaped.encoder_for(("loss",))).__module__ == "runyard.sdk._frames"
