"""Append-only spool segments: length-prefixed, CRC32-checked frames of msgpack records.

A segment file starts with a header (magic with the format version, then a msgpack map naming the
run, the writer and the segment index) and continues with frames::

    u32 length | u32 crc32(payload) | payload (msgpack array of records)

A frame holds one batch of records; every record starts with its sequence number, unique and
increasing per writer. A frame cut short by a crash, or whose checksum does not match, ends the
readable part of the segment: everything before it is returned, nothing after it is trusted, and
the number of bytes dropped is reported. Nothing is ever misread.

Standard library only at import; msgpack is imported by the functions that need it.
"""

from __future__ import annotations

import os
import struct
import threading
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runyard.errors import SpoolError
from runyard.files import fsync_dir
from runyard.names import is_number

MAGIC = b"RYSPOOL\x01"
_LEN = struct.Struct("<I")
_FRAME = struct.Struct("<II")
#: A frame larger than this is corruption, not data (the writer never makes one).
MAX_FRAME = 256 << 20
#: A segment is closed and the next one started once it passes this size.
SEGMENT_BYTES = 64 << 20
SUFFIX = ".seg"


def segment_name(writer: str, index: int) -> str:
    return f"{writer}-{index:06d}{SUFFIX}"


def parse_segment_name(name: str) -> tuple[str, int] | None:
    if not name.endswith(SUFFIX):
        return None
    writer, _, index = name[: -len(SUFFIX)].rpartition("-")
    if not writer or not is_number(index):
        return None
    return writer, int(index)


def encode_header(run_id: str, writer: str, index: int) -> bytes:
    import msgpack

    meta: bytes = msgpack.packb({"run_id": run_id, "writer": writer, "index": index})
    return MAGIC + _LEN.pack(len(meta)) + meta


def encode_frame(payload: bytes | memoryview) -> bytes:
    return _FRAME.pack(len(payload), zlib.crc32(payload)) + payload


@dataclass(frozen=True)
class Header:
    run_id: str
    writer: str
    index: int
    size: int


def read_header(data: bytes) -> Header | None:
    """The header at the start of ``data``; None if it is incomplete (a writer died creating it)."""
    import msgpack

    if len(data) < len(MAGIC) + _LEN.size:
        return None
    if data[: len(MAGIC) - 1] != MAGIC[:-1]:
        raise SpoolError("not a runyard spool segment (bad magic)")
    if data[len(MAGIC) - 1] != MAGIC[-1]:
        raise SpoolError(f"spool segment format {data[len(MAGIC) - 1]} is newer than this runyard understands")
    (length,) = _LEN.unpack_from(data, len(MAGIC))
    end = len(MAGIC) + _LEN.size + length
    if len(data) < end:
        return None
    meta = msgpack.unpackb(data[len(MAGIC) + _LEN.size : end])
    return Header(meta["run_id"], meta["writer"], int(meta["index"]), end)


@dataclass(frozen=True)
class Frames:
    """What a read of a segment found."""

    #: Decoded batches of records, in order.
    batches: list[list[Any]]
    #: Offset just past the last good frame: where the next read starts.
    end: int
    #: Bytes after ``end`` that do not (yet) form a good frame: a torn tail while the writer lives,
    #: a dropped tail once it has died.
    tail: int
    #: True if the tail failed its checksum or length check (corruption rather than a cut).
    corrupt: bool = False


def read_frames(data: bytes | memoryview, start: int) -> Frames:
    """Decode every complete, checksummed frame of ``data`` from offset ``start``."""
    import msgpack

    payloads, end, corrupt = frame_payloads(data, start)
    batches = [msgpack.unpackb(p, use_list=True, strict_map_key=False) for p in payloads]
    return Frames(batches, end, len(data) - end, corrupt)


def frame_payloads(data: bytes | memoryview, start: int) -> tuple[list[memoryview], int, bool]:
    """The payloads of every complete, checksummed frame from ``start``; the end offset; whether
    reading stopped at corruption (rather than at the end or a cut)."""
    view = memoryview(data)
    at, size = start, len(view)
    payloads: list[memoryview] = []
    corrupt = False
    while at + _FRAME.size <= size:
        length, crc = _FRAME.unpack_from(view, at)
        if length == 0 or length > MAX_FRAME:
            corrupt = True
            break
        end = at + _FRAME.size + length
        if end > size:
            break  # cut short: a write in progress, or a crash mid-write
        payload = view[at + _FRAME.size : end]
        if zlib.crc32(payload) != crc:
            corrupt = True
            break
        payloads.append(payload)
        at = end
    return payloads, at, corrupt


class SegmentWriter:
    """Appends frames to the segments of one writer in one run directory.

    One thread appends; ``sync`` may be called from another (fsync can stall for a long time on a
    busy disk, and appending must not wait for it). A lock keeps ``sync`` off a descriptor that
    ``_roll`` or ``close`` is closing.
    """

    def __init__(self, directory: Path, run_id: str, writer: str) -> None:
        self.directory = directory
        self.run_id = run_id
        self.writer = writer
        self.index = -1
        self._fd = -1
        self._size = 0
        self.unsynced = False
        self._fd_lock = threading.Lock()

    def open(self) -> None:
        self._roll()

    def _roll(self) -> None:
        with self._fd_lock:
            self._roll_locked()

    def _roll_locked(self) -> None:
        if self._fd >= 0:
            os.fsync(self._fd)
            os.close(self._fd)
        self.index += 1
        path = self.directory / segment_name(self.writer, self.index)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        header = encode_header(self.run_id, self.writer, self.index)
        os.write(self._fd, header)
        self._size = len(header)
        fsync_dir(self.directory)

    def append(self, payload: bytes | memoryview) -> None:
        """Write one frame (to the OS: a killed process loses nothing written; fsync is separate)."""
        self.append_many((payload,))

    def append_many(self, payloads: Sequence[bytes | memoryview]) -> None:
        """Write several frames with one system call.

        Each call that blocks releases the GIL, and a busy training thread then keeps it for up to
        the interpreter's switch interval (5 ms): one write per frame would cap the writer's rate.
        """
        if self._size >= SEGMENT_BYTES:
            self._roll()
        frame = b"".join([encode_frame(payload) for payload in payloads])
        view = memoryview(frame)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        self._size += len(frame)
        self.unsynced = True

    def sync(self) -> None:
        with self._fd_lock:
            if self._fd >= 0 and self.unsynced:
                self.unsynced = False  # cleared first: an append during the fsync sets it again
                os.fsync(self._fd)

    def close(self) -> None:
        self.sync()
        with self._fd_lock:
            if self._fd >= 0:
                os.fsync(self._fd)
                os.close(self._fd)
                self._fd = -1


def segments_of(directory: Path) -> dict[str, list[tuple[int, Path]]]:
    """Segments in a run directory, per writer, in index order."""
    found: dict[str, list[tuple[int, Path]]] = {}
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return found
    for entry in entries:
        parsed = parse_segment_name(entry.name)
        if parsed:
            found.setdefault(parsed[0], []).append((parsed[1], Path(entry.path)))
    for items in found.values():
        items.sort()
    return found

