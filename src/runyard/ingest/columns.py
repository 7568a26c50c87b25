"""The ingester's numpy half of reading the spool: runs of frames checked at once, and metrics
records of one shape decoded as columns instead of one record at a time.

A training loop logs the same keys every step, so its frames in the spool differ only in the bytes
of their numbers: the msgpack encoding of ``[{k1: v1, ...}, 0, time, step]`` with float values is
the same bytes everywhere else. For a block of equal frames (spool/segment.py ``Block``), this
module reads the structure of the first payload, checks with one comparison that every other
payload has the same bytes outside its numbers, and reads the numbers as strided columns. Anything
else (another shape, an integer value, a log line) returns None and is decoded record by record.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from runyard.spool.records import SEQ, STEP, TIME, seq_of

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from runyard.spool.segment import Block


@dataclass(frozen=True)
class MetricColumns:
    """Consecutive metrics records with the same keys: one row per record, in spool order."""

    keys: tuple[str, ...]
    #: Each record's sequence number (its address).
    seqs: NDArray[Any]
    times: NDArray[Any]
    steps: NDArray[Any]
    #: shape (rows, len(keys))
    values: NDArray[Any]

    def __len__(self) -> int:
        return int(self.seqs.shape[0])

    def after(self, cursor: int) -> MetricColumns | None:
        """The rows past ``cursor`` (already applied rows dropped); None if none is."""
        import numpy as np

        first = int(np.searchsorted(self.seqs, cursor, side="right"))
        if first == 0:
            return self
        if first >= len(self):
            return None
        return MetricColumns(self.keys, self.seqs[first:], self.times[first:], self.steps[first:],
                             self.values[first:])


# msgpack type bytes this reader knows (the encoding is msgpack's spec; see msgpack.org).
_FIXMAP, _MAP16 = 0x80, 0xDE
_FIXSTR, _STR8, _STR16 = 0xA0, 0xD9, 0xDA
_FLOAT64 = 0xCB
_UINTS = {0xCC: ">u1", 0xCD: ">u2", 0xCE: ">u4", 0xCF: ">u8"}
_INTS = {0xD0: ">i1", 0xD1: ">i2", 0xD2: ">i4", 0xD3: ">i8"}


@dataclass(frozen=True)
class _Shape:
    keys: tuple[str, ...]
    values: tuple[int, ...]  # offsets (in the payload) of each value's 8 bytes
    time: int
    step: int  # offset of the step's bytes; step_type says how to read them
    step_type: str  # a numpy dtype, or "fixint" (the type byte is the number)
    variable: tuple[tuple[int, int], ...]  # (start, end) byte ranges that differ between records


def _shape(payload: bytes) -> _Shape | None:
    """Where the numbers are in the encoding of one metrics record; None if it is not one whose
    values are all floats (or if it uses an encoding this reader does not read as columns)."""
    if len(payload) < 2 or payload[0] != 0x94:  # an array of 4: map, seq, time, step
        return None
    at = 1
    head = payload[at]
    if head & 0xF0 == _FIXMAP:
        count, at = head & 0x0F, at + 1
    elif head == _MAP16:
        count, at = struct.unpack_from(">H", payload, at + 1)[0], at + 3
    else:
        return None
    keys, values = [], []
    try:
        for _ in range(count):
            head = payload[at]
            if head & 0xE0 == _FIXSTR:
                length, at = head & 0x1F, at + 1
            elif head == _STR8:
                length, at = payload[at + 1], at + 2
            elif head == _STR16:
                length, at = struct.unpack_from(">H", payload, at + 1)[0], at + 3
            else:
                return None
            keys.append(payload[at : at + length].decode("utf-8"))
            at += length
            if payload[at] != _FLOAT64:
                return None
            values.append(at + 1)
            at += 9
        if payload[at] != 0x00:  # the sequence-number placeholder: records.UNNUMBERED
            return None
        at += 1
        if payload[at] != _FLOAT64:
            return None
        time, at = at + 1, at + 9
        head = payload[at]
        if head < 0x80:
            step, step_type, end = at, "fixint", at + 1
        elif head in _UINTS or head in _INTS:
            kind = _UINTS.get(head) or _INTS[head]
            size = int(kind[-1])
            step, step_type, end = at + 1, kind, at + 1 + size
        else:
            return None
    except (IndexError, UnicodeDecodeError, struct.error):
        return None
    if end != len(payload) or len(set(keys)) != len(keys):
        return None
    variable = tuple([(v, v + 8) for v in values] + [(time, time + 8), (step, end)])
    return _Shape(tuple(keys), tuple(values), time, step, step_type, variable)


def decode(block: Block, index_bits: int, index: int) -> tuple[MetricColumns, int] | None:
    """The leading frames of ``block`` that are metrics records of the first one's shape, as
    columns, and how many frames that is; None if the first frame is not such a record."""
    import numpy as np

    header = block.header
    first = bytes(block.data[header : block.size])
    shape = _shape(first)
    if shape is None:
        return None
    table = np.frombuffer(block.data, dtype=np.uint8, count=block.count * block.size).reshape(block.count,
                                                                                              block.size)
    payloads = table[:, header:]
    constant = np.ones(block.size - header, dtype=bool)
    for start, end in shape.variable:
        constant[start:end] = False
    alike = (payloads[:, constant] == payloads[0, constant]).all(axis=1)
    if shape.step_type == "fixint":
        alike &= payloads[:, shape.step] < 0x80
    rows = block.count if alike.all() else int(np.argmin(alike))
    if rows == 0:
        return None
    # Each number read in place, through a record type laid over the frame (no copy per column).
    fields = {"names": [f"v{j}" for j in range(len(shape.values))] + ["time"],
              "formats": [">f8"] * (len(shape.values) + 1),
              "offsets": [header + offset for offset in (*shape.values, shape.time)],
              "itemsize": block.size}
    frames: Any = np.frombuffer(block.data, dtype=np.dtype(fields), count=rows)  # type: ignore[call-overload]
    by_key = np.empty((len(shape.keys), rows), dtype=np.float64)  # each key's column contiguous
    for j in range(len(shape.values)):
        by_key[j] = frames[f"v{j}"]
    values = by_key.T
    times = frames["time"].astype(np.float64)
    if shape.step_type == "fixint":
        steps = payloads[:rows, shape.step].astype(np.int64)
    else:
        step_field = {"names": ["step"], "formats": [shape.step_type], "offsets": [header + shape.step],
                      "itemsize": block.size}
        raw: Any = np.frombuffer(block.data, dtype=np.dtype(step_field), count=rows)["step"]  # type: ignore[call-overload]
        if shape.step_type == ">u8" and bool((raw >= 1 << 63).any()):
            return None  # beyond int64: read record by record, where ingest refuses it by name
        steps = raw.astype(np.int64)
    seqs = (index << index_bits) | (block.offset + np.arange(rows, dtype=np.int64) * block.size)
    return MetricColumns(shape.keys, seqs, times, steps, values), rows


_ADLER = 65521


def good_run(view: memoryview, at: int, frame_size: int, rows: int) -> int:
    """How many frames from ``at`` have the first one's mark and length and a checksum that holds,
    in a row: the checks of the per-frame loop, for thousands of frames in a few numpy calls.

    Adler-32 of n bytes is A = 1 + sum(b), B = n + sum((n - i) * b[i]) (mod 65521): two sums.
    """
    import numpy as np

    from runyard.spool.segment import FRAME

    header = FRAME.size
    table = np.frombuffer(view, dtype=np.uint8, count=rows * frame_size, offset=at).reshape(rows, frame_size)
    # Mark and length as one 64-bit word per frame: one comparison each.
    heads = np.ascontiguousarray(table[:, :8]).view("<u8").ravel()
    alike = heads == heads[0]
    same = rows if alike.all() else int(np.argmin(alike))
    table = table[:same]
    length = frame_size - header
    # The sums as two matrix-vector products (BLAS); the weighted sum is at most
    # 255 * length**2 / 2: exact in float32 below 362 bytes (2**24).
    exact: Any = np.float32 if length < 362 else np.float64
    payload = table[:, header:].astype(exact)
    a = (1 + np.matmul(payload, np.ones(length, dtype=exact)).astype(np.int64)) % _ADLER
    b = (length + np.matmul(payload, np.arange(length, 0, -1, dtype=exact)).astype(np.int64)) % _ADLER
    stored = np.ascontiguousarray(table[:, 8:12]).view("<u4").ravel().astype(np.int64)
    ok = ((b << 16) | a) == stored
    return same if ok.all() else int(np.argmin(ok))


# -- parts: what the tailer hands on, records and columns mixed, in spool order ------------------------


def first_seq(part: Any) -> int:
    return int(part.seqs[0]) if type(part) is MetricColumns else seq_of(part)


def last_seq(part: Any) -> int:
    return int(part.seqs[-1]) if type(part) is MetricColumns else seq_of(part)


def rows(part: Any) -> int:
    return len(part) if type(part) is MetricColumns else 1


def after(parts: list[Any], cursor: int) -> list[Any]:
    """The parts (and the rows of columns) past ``cursor``."""
    out = []
    for part in parts:
        if type(part) is MetricColumns:
            rest = part.after(cursor)
            if rest is not None:
                out.append(rest)
        elif seq_of(part) > cursor:
            out.append(part)
    return out


def split(part: MetricColumns, at: int) -> tuple[MetricColumns, MetricColumns]:
    return (MetricColumns(part.keys, part.seqs[:at], part.times[:at], part.steps[:at], part.values[:at]),
            MetricColumns(part.keys, part.seqs[at:], part.times[at:], part.steps[at:], part.values[at:]))


def chunks(parts: list[Any], size: int) -> list[list[Any]]:
    """``parts`` cut into lists of at most ``size`` rows each (columns cut where needed)."""
    out: list[list[Any]] = [[]]
    room = size
    for part in parts:
        while rows(part) > room:
            if type(part) is MetricColumns and room > 0:
                head, part = split(part, room)
                out[-1].append(head)
            out.append([])
            room = size
        out[-1].append(part)
        room -= rows(part)
    return [chunk for chunk in out if chunk]


def to_records(parts: list[Any]) -> list[Any]:
    """Records only (columns as the metrics maps they were logged as): for a server, a quarantine."""
    out: list[Any] = []
    for part in parts:
        if type(part) is not MetricColumns:
            out.append(part)
            continue
        keys = part.keys
        for i in range(len(part)):
            record: dict[str, Any] = dict(zip(keys, part.values[i].tolist(), strict=True))
            record[SEQ], record[TIME], record[STEP] = int(part.seqs[i]), float(part.times[i]), int(part.steps[i])
            out.append(record)
    return out
