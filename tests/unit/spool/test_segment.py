"""Segments: a torn or corrupt frame is detected at every byte offset, never misread; once the writer
is gone, the reader resynchronises past corruption and says how many bytes it skipped."""

from __future__ import annotations

from pathlib import Path

import msgpack
import pytest

from runyard.errors import SpoolError
from runyard.ingest.columns import good_run
from runyard.spool.segment import (
    MAGIC_V1,
    create_segment,
    encode_frame,
    encode_frame_v1,
    encode_header,
    read_frames,
    read_header,
    scan,
)

RUN = "01J0000000000000000000000A"
RECORDS = [[{"loss": float(i), "acc": 0.5}, 0, 1.0 + i, i] for i in range(27)]


def segment_bytes(records: list[list[object]]) -> tuple[bytes, list[int]]:
    """A format-2 segment as its writer leaves it (header, frames), and each frame's offset."""
    data = bytearray(encode_header(RUN, "w1", 0))
    offsets = []
    for record in records:
        offsets.append(len(data))
        data += encode_frame(msgpack.packb(record))
    return bytes(data), offsets


def test_every_cut_of_the_last_frame_yields_exactly_the_complete_frames() -> None:
    data, offsets = segment_bytes(RECORDS[:4])
    header = read_header(data)
    assert header is not None and header.run_id == RUN and header.version == 2
    boundaries = [*offsets, len(data)]
    for cut in range(header.size, len(data) + 1):
        for final in (False, True):
            found = read_frames(data[:cut], header.size, final=final)
            complete = max(i for i, b in enumerate(boundaries) if b <= cut)
            assert found.batches == RECORDS[:complete], (cut, final)
            rest = data[boundaries[complete] : cut]
            # What follows the last complete frame: all of it while the writer may finish it; once it
            # is gone, up to the last byte that holds something (zeros are unwritten space).
            assert found.end == boundaries[complete] and found.tail == len(rest.rstrip(b"\0") if final else rest)
            assert found.skipped == 0


def test_a_flipped_byte_in_frame_10_costs_frame_10_only_once_the_writer_is_gone() -> None:
    data, offsets = segment_bytes(RECORDS)
    damaged = bytearray(data)
    damaged[offsets[10] + 15] ^= 0x40
    header = read_header(data)
    assert header is not None
    live = read_frames(bytes(damaged), header.size, final=False)
    assert live.batches == RECORDS[:10] and live.end == offsets[10]  # maybe a write in progress: wait
    dead = read_frames(bytes(damaged), header.size, final=True)
    assert dead.batches == RECORDS[:10] + RECORDS[11:]  # the 16 intact frames after it are kept
    assert dead.skipped == offsets[11] - offsets[10] and dead.end == len(data)


def test_a_damaged_length_and_a_hole_of_zeros_are_skipped_too() -> None:
    data, offsets = segment_bytes(RECORDS)
    damaged = bytearray(data)
    damaged[offsets[3] + 5] ^= 0xFF  # the length field of frame 3: it now claims megabytes
    damaged[offsets[20] : offsets[22]] = bytes(offsets[22] - offsets[20])  # a page that never reached the disk
    found = read_frames(bytes(damaged), offsets[0], final=True)
    assert found.batches == RECORDS[:3] + RECORDS[4:20] + RECORDS[22:]
    assert found.skipped == (offsets[4] - offsets[3]) + (offsets[22] - offsets[20])


def test_the_zeros_of_a_preallocated_segment_are_its_live_end_not_corruption(tmp_path: Path) -> None:
    segment = create_segment(tmp_path, RUN, "w1", 0, 1 << 16)
    for record in RECORDS[:5]:
        segment.write(encode_frame(msgpack.packb(record)))
    data = (tmp_path / "w1-000000.seg").read_bytes()
    assert len(data) > (1 << 16)  # preallocated
    header = read_header(data)
    assert header is not None
    for final in (False, True):
        found = read_frames(data, header.size, final=final)
        assert found.batches == RECORDS[:5] and found.tail == 0 and found.skipped == 0
    segment.seal()  # the writer went on in the next segment
    found = scan(memoryview((tmp_path / "w1-000000.seg").read_bytes())[header.size :], header.size, 2, False, True)
    assert found.closed and len(found.frames) == 5
    segment.close()
    assert (tmp_path / "w1-000000.seg").stat().st_size == found.end  # cut to what was written


def test_a_full_segment_refuses_the_frame_that_does_not_fit_whoever_writes(tmp_path: Path) -> None:
    segment = create_segment(tmp_path, RUN, "w1", 0, 100)
    frame = encode_frame(msgpack.packb(RECORDS[0]))
    segment.write(frame)
    with pytest.raises(ValueError):
        segment.write(frame * 3)
    segment.seal()
    with pytest.raises(ValueError):
        segment.write(b"x")  # sealed: no thread can add a frame after the END frame
    segment.close()


def test_format_1_segments_of_earlier_versions_are_still_read_and_resynchronised() -> None:
    batches = [[{"loss": float(i)}, i, 1.0, i] for i in range(6)]
    data = bytearray(encode_header(RUN, "w1", 0, magic=MAGIC_V1))
    offsets = []
    for batch in batches:
        offsets.append(len(data))
        data += encode_frame_v1(msgpack.packb(batch))
    header = read_header(bytes(data))
    assert header is not None and header.version == 1
    assert read_frames(bytes(data), header.size, version=1).batches == batches
    data[offsets[2] + 9] ^= 0x01
    assert read_frames(bytes(data), header.size, version=1).batches == batches[:2]
    dead = read_frames(bytes(data), header.size, version=1, final=True)
    assert dead.batches == batches[:2] + batches[3:] and dead.skipped == offsets[3] - offsets[2]


def test_a_header_cut_short_is_not_an_error_and_a_foreign_file_is() -> None:
    data, _ = segment_bytes(RECORDS[:2])
    assert read_header(data[:10]) is None
    with pytest.raises(SpoolError, match="bad magic"):
        read_header(b"NOTASPOOL-------")
    with pytest.raises(SpoolError, match="newer"):
        read_header(b"RYSPOOL\x09" + data[8:])


def test_a_flipped_byte_anywhere_in_a_run_of_equal_frames_costs_only_its_frame() -> None:
    # Runs of frames of one length are checked together (numpy's Adler-32): every byte of every
    # frame must count there exactly as in the frame-by-frame check.
    records = [[{"loss": float(i), "acc": 0.25}, 0, 1.0 + i, 100 + i] for i in range(40)]
    data, offsets = segment_bytes(records)
    ends = [*offsets[1:], len(data)]
    for position in range(offsets[0], len(data)):
        damaged = bytearray(data)
        damaged[position] ^= 0x01
        hit = max(i for i, o in enumerate(offsets) if o <= position)
        found = read_frames(bytes(damaged), offsets[0], final=True, check_run=good_run)
        assert found.batches == records[:hit] + records[hit + 1 :], position
        if hit < len(records) - 1:
            assert found.skipped == ends[hit] - offsets[hit]
        else:  # nothing after it: a damaged tail, dropped and counted
            assert found.skipped == 0 and found.tail == ends[hit] - offsets[hit]


def test_a_read_cut_short_by_its_frame_limit_reports_no_torn_tail() -> None:
    """The frames after a read that stopped at its limit are good ones waiting to be read, not a torn
    tail: counting them as one was wrong (and copied the rest of a settled segment on every read)."""
    data, offsets = segment_bytes(RECORDS)
    header = read_header(data)
    assert header is not None
    view = memoryview(data)[header.size :]
    for check_run in (None, good_run):
        found = scan(view, header.size, 2, final=True, eof=True, limit=5, check_run=check_run)
        assert found.short and found.count == 5 and found.end == offsets[5]
        assert found.tail == 0, check_run
