"""Segments: a torn or corrupt tail is detected and dropped, at every byte offset, never misread."""

from __future__ import annotations

import msgpack
import pytest

from runyard.errors import SpoolError
from runyard.spool.segment import SegmentWriter, read_frames, read_header


def write_segment(tmp_path, batches):  # type: ignore[no-untyped-def]
    w = SegmentWriter(tmp_path, "01J0000000000000000000000A", "w1")
    w.open()
    for batch in batches:
        w.append(msgpack.packb(batch))
    w.close()
    return (tmp_path / "w1-000000.seg").read_bytes()


BATCHES = [[[i, "m", 1.0 + i, i, {"loss": float(i), "acc": 0.5}] for i in range(b * 3, b * 3 + 3)] for b in range(4)]


def test_every_cut_of_the_last_frame_yields_exactly_the_complete_frames(tmp_path) -> None:  # type: ignore[no-untyped-def]
    data = write_segment(tmp_path, BATCHES)
    header = read_header(data)
    assert header is not None and header.run_id == "01J0000000000000000000000A"
    full = read_frames(data, header.size)
    assert full.batches == BATCHES and full.tail == 0 and not full.corrupt
    boundaries = [header.size]
    at = header.size
    for batch in BATCHES:
        at += 8 + len(msgpack.packb(batch))
        boundaries.append(at)
    for cut in range(header.size, len(data) + 1):
        frames = read_frames(data[:cut], header.size)
        complete = max(i for i, b in enumerate(boundaries) if b <= cut)
        assert frames.batches == BATCHES[:complete], cut
        assert frames.end == boundaries[complete] and frames.tail == cut - boundaries[complete]
        assert not frames.corrupt


def test_a_flipped_byte_ends_the_readable_part(tmp_path) -> None:  # type: ignore[no-untyped-def]
    data = bytearray(write_segment(tmp_path, BATCHES))
    header = read_header(bytes(data))
    assert header is not None
    second_frame_payload = header.size + 8 + len(msgpack.packb(BATCHES[0])) + 8 + 3
    data[second_frame_payload] ^= 0x40
    frames = read_frames(bytes(data), header.size)
    assert frames.batches == BATCHES[:1] and frames.corrupt


def test_a_header_cut_short_is_not_an_error_and_a_foreign_file_is(tmp_path) -> None:  # type: ignore[no-untyped-def]
    data = write_segment(tmp_path, BATCHES)
    assert read_header(data[:10]) is None
    with pytest.raises(SpoolError, match="bad magic"):
        read_header(b"NOTASPOOL-------")
    with pytest.raises(SpoolError, match="newer"):
        read_header(b"RYSPOOL\x09" + data[8:])
