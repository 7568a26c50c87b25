"""Append-only spool segments: CRC32-checked frames of msgpack records.

A segment file starts with a header (magic with the format version, a u32 length, then a msgpack
map naming the run, the writer and the segment index) and continues with frames.

**Format 2** (written today). The writer preallocates each segment and maps it into memory; every
record is one frame, copied into the mapping by the call that made it, so a record is in the
kernel's page cache (and survives the death of its process) when ``log()`` returns::

    b"RYfr" | u32 length | u32 adler32(payload) | payload (msgpack array: one record)

Bytes not written yet are zero. A frame of length ``END`` closes the segment: the writer went on in
the next one. Records carry no sequence number of their own: a record's number is its address,
``(segment index << 32) | offset of its frame`` (``address``), unique and increasing in the order
records reached the file, whichever thread wrote them, and free to give.

**Format 1** (earlier runyard): no mark; each frame holds a batch of records that the writer
numbered, and a segment ends where a later one begins. Still read, never written.

The checksum is Adler-32, as cheap as CRC32 to compute in ``log()``, and a sum of the bytes and of
their running sums: for a run of frames of one length (a training loop logs the same keys every
step) the ingester checks them all at once with numpy (``scan``'s ``check_run``) instead of one
Python call per frame.

Reading never misreads. A frame counts only if its checksum matches. While the writer lives, the
first frame that does not check out ends the read (it may be a write in progress; the next pass
reads it again). Once the writer is gone, a bad frame in the middle is skipped: the reader
resynchronises on the next frame that checks out and reports the bytes it skipped; a torn tail is
dropped and counted.

Standard library only at import; msgpack is imported by the functions that need it.
"""

from __future__ import annotations

import mmap
import os
import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runyard.errors import SpoolError
from runyard.files import fsync_dir
from runyard.names import is_number

MAGIC_V1 = b"RYSPOOL\x01"
MAGIC = b"RYSPOOL\x02"
_MAGICS = {MAGIC_V1: 1, MAGIC: 2}
_LEN = struct.Struct("<I")
_FRAME_V1 = struct.Struct("<II")
#: A format-2 frame's header: mark, payload length, adler32 of the payload.
FRAME = struct.Struct("<4sII")
MARK = b"RYfr"
#: The length that closes a segment (format 2).
END = 0xFFFFFFFF
_END_FRAME = FRAME.pack(MARK, END, 0)


def ends_before(path: Path, offset: int) -> bool:
    """Whether the bytes just before ``offset`` are a format-2 END frame: a reader resuming there
    has read the whole segment and goes on in the next one."""
    if offset < FRAME.size:
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        return os.pread(fd, FRAME.size, offset - FRAME.size) == _END_FRAME
    finally:
        os.close(fd)
_ZERO_MARK = b"\0\0\0\0"
#: A frame larger than this is corruption, not data (the writer never makes one).
MAX_FRAME = 256 << 20
#: Format-2 segments start this large (data bytes), and double with each new segment up to
#: SEGMENT_BYTES: a short run reserves little disk, a fast one rolls rarely.
FIRST_SEGMENT_BYTES = 1 << 20
SEGMENT_BYTES = 64 << 20
SUFFIX = ".seg"
#: Bits of a record's address that hold its frame's offset (the rest: the segment index).
OFFSET_BITS = 32


def segment_name(writer: str, index: int) -> str:
    return f"{writer}-{index:06d}{SUFFIX}"


def parse_segment_name(name: str) -> tuple[str, int] | None:
    if not name.endswith(SUFFIX):
        return None
    writer, _, index = name[: -len(SUFFIX)].rpartition("-")
    if not writer or not is_number(index):
        return None
    return writer, int(index)


def address(index: int, offset: int) -> int:
    """A position in a writer's spool as one increasing number (format 2's sequence numbers)."""
    return (index << OFFSET_BITS) | offset


def split_address(value: int) -> tuple[int, int]:
    return value >> OFFSET_BITS, value & ((1 << OFFSET_BITS) - 1)


def encode_header(run_id: str, writer: str, index: int, magic: bytes = MAGIC) -> bytes:
    import msgpack

    meta: bytes = msgpack.packb({"run_id": run_id, "writer": writer, "index": index})
    return magic + _LEN.pack(len(meta)) + meta


def encode_frame_v1(payload: bytes | memoryview) -> bytes:
    """A format-1 frame (older runyard; kept for tests that build such spools)."""
    return _FRAME_V1.pack(len(payload), zlib.crc32(payload)) + payload


def encode_frame(payload: bytes | memoryview) -> bytes:
    return FRAME.pack(MARK, len(payload), zlib.adler32(payload)) + payload


@dataclass(frozen=True)
class Header:
    run_id: str
    writer: str
    index: int
    size: int
    version: int = 2


def read_header(data: bytes | memoryview) -> Header | None:
    """The header at the start of ``data``; None if it is incomplete (a writer died creating it)."""
    import msgpack

    data = bytes(data[: len(MAGIC) + _LEN.size + 4096]) if len(data) > 4096 else bytes(data)
    if len(data) < len(MAGIC) + _LEN.size or not data[: len(MAGIC)].strip(b"\0"):
        return None  # not written yet: a segment is preallocated, then its header written
    magic = data[: len(MAGIC)]
    if magic[:-1] != MAGIC[:-1]:
        raise SpoolError("not a runyard spool segment (bad magic)")
    version = _MAGICS.get(magic)
    if version is None:
        raise SpoolError(f"spool segment format {magic[-1]} is newer than this runyard understands")
    (length,) = _LEN.unpack_from(data, len(MAGIC))
    end = len(MAGIC) + _LEN.size + length
    if len(data) < end:
        return None
    meta = msgpack.unpackb(data[len(MAGIC) + _LEN.size : end])
    return Header(meta["run_id"], meta["writer"], int(meta["index"]), end, version)


@dataclass(frozen=True)
class Block:
    """``count`` consecutive good frames of ``size`` bytes each (headers included), starting at file
    offset ``offset``; ``data`` holds their bytes. A lone frame is a block of one."""

    offset: int
    size: int
    count: int
    data: memoryview
    #: Bytes of each frame's header (format 1's frames have no mark).
    header: int = FRAME.size

    def frames(self) -> list[tuple[int, memoryview]]:
        """(offset, payload) of each frame of the block."""
        header = self.header
        return [(self.offset + i * self.size, self.data[i * self.size + header : (i + 1) * self.size])
                for i in range(self.count)]


@dataclass
class Scan:
    """What one read of part of a segment found. Offsets are the file's."""

    #: The good frames, in order, grouped in blocks of equal frames (see ``Block``).
    blocks: list[Block] = field(default_factory=list)
    #: Where the next read starts: past the last good frame (and past skipped corruption).
    end: int = 0
    #: Bytes skipped as corruption between good frames (only once the writer is gone).
    skipped: int = 0
    #: Bytes after ``end`` that hold something but no good frame: a write in progress while the
    #: writer lives, a torn tail once it is gone.
    tail: int = 0
    #: The writer closed this segment and went on in the next one (format 2).
    closed: bool = False
    #: The data ran out before a frame was complete (``end`` is where to read more from).
    short: bool = False
    #: When ``short``: how many more bytes the cut frame needs at least.
    need: int = 0

    @property
    def corrupt(self) -> bool:
        return self.skipped > 0

    @property
    def count(self) -> int:
        return sum(block.count for block in self.blocks)

    @property
    def frames(self) -> list[tuple[int, memoryview]]:
        """(offset, payload) of every good frame."""
        return [frame for block in self.blocks for frame in block.frames()]


#: Checks a run of equal frames at once: (data, offset, frame size, frames) -> how many from the
#: first have its mark and length and a checksum that holds. The ingester passes one made with numpy
#: (ingest/columns.py ``good_run``); the spool itself stays free of it.
RunCheck = Callable[[memoryview, int, int, int], int]


def scan(data: bytes | memoryview, base: int, version: int, final: bool, eof: bool,
         limit: int = 1 << 62, check_run: RunCheck | None = None) -> Scan:
    """Frames in ``data``, which holds the segment's bytes from file offset ``base``.

    ``final``: the writer is gone, so what is on disk will not change: a bad frame is skipped (the
    reader resynchronises on the next good one) instead of ending the read. ``eof``: ``data`` runs to
    the end of the file (otherwise a frame cut by the end of ``data`` is only a short read).
    ``limit``: about this many frames at most (then ``short``: scan again from ``end``), so that a
    reader holds a bounded number of records however much is waiting. ``check_run``: checks runs of
    equal frames at once (otherwise each frame is checked on its own).
    """
    if version == 1:
        return _scan_v1(memoryview(data), base, final, eof, limit)
    return _scan_v2(memoryview(data), base, final, eof, limit, check_run)


#: Frames of one length in a row from which ``check_run`` is asked, and the largest frame it is
#: asked for.
RUN_MIN = 8
RUN_MAX_FRAME = 4096


def _scan_v2(view: memoryview, base: int, final: bool, eof: bool, limit: int, check_run: RunCheck | None) -> Scan:
    out = Scan(end=base)
    blocks = out.blocks
    size = len(view)
    settled = final and eof  # what is here is all there will ever be
    at = 0
    count = 0
    unpack_from, adler32, header = FRAME.unpack_from, zlib.adler32, FRAME.size
    while at + header <= size:
        mark, length, check = unpack_from(view, at)
        if mark == MARK:
            if length == END:
                out.closed = True
                at += header
                break
            if 0 < length <= MAX_FRAME:
                end = at + header + length
                if end <= size:
                    frame_size = header + length
                    rows = min((size - at) // frame_size, limit - count)
                    if (check_run is not None and rows >= RUN_MIN and frame_size <= RUN_MAX_FRAME
                            and view[end : end + 8] == view[at : at + 8]):  # the next frame alike: a run
                        good = check_run(view, at, frame_size, rows)
                        if good > 1:
                            blocks.append(Block(base + at, frame_size, good, view[at : at + good * frame_size]))
                            at += good * frame_size
                            count += good
                            if count >= limit:
                                out.short = True
                                break
                            continue
                    if adler32(view[at + header : end]) == check:
                        blocks.append(Block(base + at, frame_size, 1, view[at:end]))
                        at = end
                        count += 1
                        if count >= limit:
                            out.short = True
                            break
                        continue
                elif not eof:
                    out.short = True  # a frame longer than this read: read on from ``end``
                    out.need = end - size
                    break
        # Zeros (the live end of a preallocated segment), a write in progress, or corruption.
        if not settled:
            break
        found = _resync_v2(view, at)
        if found < 0:
            break
        out.skipped += found - at
        at = found
    else:
        out.short = not eof and not out.closed
    out.end = base + at
    # A read that stopped at its limit has good frames after it, not a tail (and copying the rest
    # of a settled segment on every such read made catching up on one quadratic).
    if not out.closed and not (out.short and count >= limit):
        rest = bytes(view[at:]) if settled else bytes(view[at : at + header])
        out.tail = len(rest.rstrip(b"\0")) if settled else (size - at if rest.strip(b"\0") else 0)
    return out


def _resync_v2(view: memoryview, start: int) -> int:
    """Offset of the next frame after ``start`` that checks out (or the closing frame); -1 if none
    in ``view``. ``find`` skips zero runs (a hole, the preallocated tail) at C speed."""
    data = view.obj if isinstance(view.obj, bytes) and len(view.obj) == len(view) else bytes(view)
    size = len(data)
    at = start + 1
    while True:
        at = data.find(MARK, at)
        if at < 0 or at + FRAME.size > size:
            return -1
        _, length, crc = FRAME.unpack_from(data, at)
        if length == END:
            return at
        end = at + FRAME.size + length
        if 0 < length <= MAX_FRAME and end <= size and zlib.adler32(view[at + FRAME.size : end]) == crc:
            return at
        at += 1


def _scan_v1(view: memoryview, base: int, final: bool, eof: bool, limit: int) -> Scan:
    out = Scan(end=base)
    size = len(view)
    at = 0
    while at + _FRAME_V1.size <= size:
        length, crc = _FRAME_V1.unpack_from(view, at)
        if 0 < length <= MAX_FRAME:
            end = at + _FRAME_V1.size + length
            if end > size and not eof:
                out.short = True
                break
            if end <= size:
                payload = view[at + _FRAME_V1.size : end]
                if zlib.crc32(payload) == crc:
                    out.blocks.append(Block(base + at, end - at, 1, view[at:end], _FRAME_V1.size))
                    at = end
                    if len(out.blocks) >= limit:
                        out.short = True
                        break
                    continue
        if not (final and eof):
            break
        found = _resync_v1(view, at + 1)
        if found < 0:
            break
        out.skipped += found - at
        at = found
    out.end = base + at
    out.tail = size - at
    return out


def _resync_v1(view: memoryview, start: int) -> int:
    """Format 1 has no mark: try every offset (only for a dead writer's corrupt segment)."""
    size = len(view)
    for at in range(start, size - _FRAME_V1.size):
        length, crc = _FRAME_V1.unpack_from(view, at)
        end = at + _FRAME_V1.size + length
        if 0 < length <= MAX_FRAME and end <= size and zlib.crc32(view[at + _FRAME_V1.size : end]) == crc:
            return at
    return -1


@dataclass(frozen=True)
class Frames:
    """Decoded batches of a whole segment's data (tests and tools; the tailer scans in chunks)."""

    batches: list[list[Any]]
    end: int
    tail: int
    corrupt: bool = False
    skipped: int = 0


def read_frames(data: bytes | memoryview, start: int, version: int = 2, final: bool = False,
                check_run: RunCheck | None = None) -> Frames:
    """Every good frame of ``data`` from offset ``start``, decoded (a format-2 payload is one record)."""
    import msgpack

    found = scan(memoryview(data)[start:], start, version, final, eof=True, check_run=check_run)
    batches = [msgpack.unpackb(p, use_list=True, strict_map_key=False) for _, p in found.frames]
    return Frames(batches, found.end, found.tail, found.corrupt, found.skipped)


class MappedSegment:
    """One format-2 segment being written: a preallocated file and a shared mapping of it.

    ``write`` (the mapping's own method) copies a frame at the current position and moves it on,
    in one C call: atomic with respect to other Python threads, so producers need no lock, and a
    frame can never straddle another. It raises ValueError when the frame does not fit (or after
    ``seal``): the caller goes on in the next segment.
    """

    def __init__(self, path: Path, fd: int, mapping: mmap.mmap, index: int, start: int) -> None:
        self.path = path
        self.fd = fd
        self.mapping = mapping
        self.index = index
        self.start = start
        self.write = mapping.write
        self.tell = mapping.tell
        #: File size once sealed (END written): what ``close`` keeps.
        self.sealed_at: int | None = None
        self._end: int | None = None

    @property
    def capacity(self) -> int:
        return len(self.mapping) - self.start

    def seal(self) -> None:
        """Close the segment for writing: no more writes through ``write``, whoever calls it, and an
        END frame after the last record, so that the reader goes on in the next segment.

        Raises OSError if the END frame could not be written (it goes through the mapping when it
        fits, so only a segment filled to the last byte needs a system call); then nothing may be
        written in the next segment, which the reader would never reach: call again later.
        """
        if self.sealed_at is not None:
            return
        if self._end is None:
            self._end = self.mapping.tell()
            self.mapping.seek(len(self.mapping))  # any later write() raises ValueError
        at = self._end
        if at + FRAME.size <= len(self.mapping):
            self.mapping[at : at + FRAME.size] = _END_FRAME
        else:
            os.pwrite(self.fd, _END_FRAME, at)  # the room past the mapping, reserved at creation
        self.sealed_at = at + FRAME.size

    @property
    def used(self) -> int:
        """Bytes of the file that hold something: the header, the frames and (once sealed) END."""
        if self.sealed_at is not None:
            return self.sealed_at
        return self._end if self._end is not None else self.mapping.tell()

    def sync(self) -> None:
        os.fsync(self.fd)

    def close(self, sync: bool = True) -> None:
        """Unmap, cut the file to what was written, sync (unless told not to), close. Raises
        BufferError, changing nothing, while another thread holds an export of the mapping."""
        used = self.used
        self.mapping.close()
        try:
            os.ftruncate(self.fd, used)
            if sync:
                os.fsync(self.fd)
        finally:
            os.close(self.fd)

    def discard(self) -> None:
        """Remove a segment that was never written to (a spare)."""
        self.mapping.close()
        os.close(self.fd)
        self.path.unlink(missing_ok=True)


def create_segment(directory: Path, run_id: str, writer: str, index: int, capacity: int) -> MappedSegment:
    """A new preallocated, mapped segment with room for ``capacity`` bytes of frames.

    The blocks are reserved up front (``posix_fallocate``): a full disk shows here, as an OSError
    the writer can handle, rather than as SIGBUS in the middle of a ``log()`` call later.
    """
    path = directory / segment_name(writer, index)
    header = encode_header(run_id, writer, index)
    length = len(header) + capacity
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.posix_fallocate(fd, 0, length + FRAME.size)  # the END frame's room too
        os.pwrite(fd, header, 0)
        mapping = mmap.mmap(fd, length, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        mapping.seek(len(header))
        fsync_dir(directory)
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    return MappedSegment(path, fd, mapping, index, len(header))


def segment_capacity(index: int, at_least: int = 0) -> int:
    """Data bytes for the segment of this index: doubling from FIRST_SEGMENT_BYTES to SEGMENT_BYTES,
    and never less than one frame of ``at_least`` bytes."""
    size = min(SEGMENT_BYTES, FIRST_SEGMENT_BYTES << min(index, 16))
    return max(size, at_least)


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


def frames_of(payloads: Sequence[bytes | memoryview]) -> bytes:
    """Several format-2 frames, ready for one write."""
    return b"".join(encode_frame(p) for p in payloads)
