"""Metric series as packed chunks with exact aggregates: the pure (no SQL) half of the time-series store.

A series is stored as chunks of about ``CHUNK_POINTS`` points sorted by step, one row each (Prometheus
style), and *blocks*: exact aggregates (count, NaN count, min, max, sum, last) over contiguous step
ranges. Level 0 has one block per chunk; a level-k block aggregates ``FANOUT`` consecutive level k-1
blocks. Chunks never split a step between them, so blocks at one level are disjoint in step and
between two consecutive blocks there are no points.

An envelope query picks the coarsest level that still offers as many units as buckets were asked
for, covers the step range exactly with whole blocks (descending a level only at the two edges),
decodes at most the two edge chunks, and groups the units into buckets. Bucket boundaries therefore
fall on unit boundaries, and every statistic is exact over the raw points in the bucket's step
range: nothing is sampled, so a spike is never lost. Cost: O(buckets x FANOUT), not O(points).

NaN is a value like any other for ``count`` and ``last``; ``min``, ``max`` and ``mean`` ignore NaN
(they are NaN only when every point in the bucket is NaN) and ``nan_count`` says how many there were.
Infinities take part in min, max and mean as IEEE arithmetic says.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import NDArray

#: Points per chunk. A chunk may be longer only when one step has more points than this.
CHUNK_POINTS = 1024
#: Blocks of level k-1 per block of level k.
FANOUT = 8

_HEADER = struct.Struct("<BBxxIII")  # version, flags, count, len(steps segment), len(times segment)
_VERSION = 1
#: Flag: the steps are first + i * stride (the usual case), stored as those two numbers.
_REGULAR_STEPS = 1
_REGULAR = struct.Struct("<qq")


@dataclass(frozen=True)
class Points:
    """Points of one series, sorted by step (stable: equal steps keep their arrival order)."""

    steps: NDArray[np.int64]
    times: NDArray[np.float64]
    values: NDArray[np.float64]

    def __len__(self) -> int:
        return int(self.steps.shape[0])

    @classmethod
    def empty(cls) -> Points:
        return cls(np.empty(0, np.int64), np.empty(0, np.float64), np.empty(0, np.float64))

    @classmethod
    def of(cls, steps: object, times: object, values: object) -> Points:
        """Validate and sort raw arrays (any array-like); raises ValueError on mismatched lengths."""
        s = np.ascontiguousarray(steps, dtype=np.int64).reshape(-1)
        t = np.ascontiguousarray(times, dtype=np.float64).reshape(-1)
        v = np.ascontiguousarray(values, dtype=np.float64).reshape(-1)
        if not (s.shape == t.shape == v.shape):
            raise ValueError(f"steps, times and values differ in length: {len(s)}, {len(t)}, {len(v)}")
        if s.shape[0] > 1 and bool(np.any(s[1:] < s[:-1])):
            order = np.argsort(s, kind="stable")
            s, t, v = s[order], t[order], v[order]
        return cls(s, t, v)

    def concat(self, later: Points) -> Points:
        """These points followed by ``later`` (arrived after), sorted by step, stable."""
        if len(self) == 0:
            return later
        if len(later) == 0:
            return self
        return Points.of(
            np.concatenate([self.steps, later.steps]),
            np.concatenate([self.times, later.times]),
            np.concatenate([self.values, later.values]),
        )

    def between(self, start: int, end: int) -> Points:
        lo, hi = np.searchsorted(self.steps, [start, end + 1])
        return Points(self.steps[lo:hi], self.times[lo:hi], self.values[lo:hi])

    def chunks(self, size: int = CHUNK_POINTS) -> list[Points]:
        """Split into chunks of ``size`` points, moving each cut forward past equal steps."""
        out: list[Points] = []
        n, begin = len(self), 0
        while begin < n:
            cut = min(begin + size, n)
            if cut < n and self.steps[cut] == self.steps[cut - 1]:
                cut = int(np.searchsorted(self.steps, self.steps[cut - 1], side="right"))
            out.append(Points(self.steps[begin:cut], self.times[begin:cut], self.values[begin:cut]))
            begin = cut
        return out


def encode_chunk(points: Points) -> bytes:
    """Pack a chunk: steps (two numbers when regular, else compressed deltas), times in microseconds as
    compressed deltas, values as raw float64."""
    deltas = np.diff(points.steps, prepend=0)
    regular = len(points) > 1 and bool(np.all(deltas[2:] == deltas[1]))
    micros = np.rint(points.times * 1e6).astype(np.int64)
    return _chunk_bytes(deltas, regular, np.diff(micros, prepend=0), points.values)


def _chunk_bytes(step_deltas: NDArray[np.int64], regular: bool, time_deltas: NDArray[np.int64],
                 values: NDArray[np.float64]) -> bytes:
    """A chunk's bytes from its step and time deltas (each starting with the first value itself)."""
    if regular:
        steps = _REGULAR.pack(int(step_deltas[0]), int(step_deltas[1]))
    else:
        steps = zlib.compress(step_deltas.tobytes(), 1)
    times = zlib.compress(time_deltas.tobytes(), 1)
    header = _HEADER.pack(_VERSION, _REGULAR_STEPS if regular else 0, len(values), len(steps), len(times))
    return b"".join((header, steps, times, values.tobytes()))


def pack_chunks(points: Points, size: int = CHUNK_POINTS) -> tuple[list[bytes], list[Stats]]:
    """``points.chunks(size)``, each encoded (``encode_chunk``) and with its ``Stats``: the same
    bytes and aggregates, with the arithmetic done for all chunks at once when steps increase
    strictly (every chunk but the last is then exactly ``size`` points). Ingest calls this for every
    chunk it writes; one numpy call per column instead of a dozen per chunk is most of its cost."""
    n = len(points)
    whole = n // size
    steps = points.steps
    if whole < 2 or bool(np.any(steps[1:] <= steps[:-1])):
        pieces = points.chunks(size)
        return [encode_chunk(p) for p in pieces], [Stats.of(p) for p in pieces]
    cut = whole * size
    s = steps[:cut].reshape(whole, size)
    v = points.values[:cut].reshape(whole, size)
    step_deltas = np.diff(s, axis=1, prepend=0)
    step_deltas[:, 0] = s[:, 0]
    regular = (step_deltas[:, 2:] == step_deltas[:, 1:2]).all(axis=1).tolist() if size > 1 else [False] * whole
    micros = np.rint(points.times[:cut] * 1e6).astype(np.int64).reshape(whole, size)
    time_deltas = np.diff(micros, axis=1, prepend=0)
    time_deltas[:, 0] = micros[:, 0]
    nans = np.isnan(v)
    nan_counts = nans.sum(axis=1).tolist()
    with np.errstate(invalid="ignore"):
        vmins = v.min(axis=1).tolist()  # NaN rows are aggregated by Stats.of below
        vmaxs = v.max(axis=1).tolist()
        sums = v.sum(axis=1).tolist()
    firsts, lasts, vlasts = s[:, 0].tolist(), s[:, -1].tolist(), v[:, -1].tolist()
    datas: list[bytes] = []
    stats: list[Stats] = []
    for k in range(whole):
        datas.append(_chunk_bytes(step_deltas[k], regular[k], time_deltas[k], v[k]))
        if nan_counts[k]:  # the sum of the values that are not NaN: the one Stats.of adds up
            stats.append(Stats.of(Points(s[k], points.times[k * size : (k + 1) * size], v[k])))
        else:
            stats.append(Stats(firsts[k], lasts[k], size, 0, vmins[k], vmaxs[k], sums[k], vlasts[k]))
    if cut < n:
        rest = Points(steps[cut:], points.times[cut:], points.values[cut:])
        datas.append(encode_chunk(rest))
        stats.append(Stats.of(rest))
    return datas, stats


def _decode_steps(data: bytes) -> tuple[NDArray[np.int64], int, int, int]:
    """A chunk's steps, its point count, and the offset and length of its times segment."""
    version, flags, n, ls, lt = _HEADER.unpack_from(data)
    if version != _VERSION:
        raise ValueError(f"unknown chunk format version {version}")
    at = _HEADER.size
    if flags & _REGULAR_STEPS:
        first, stride = _REGULAR.unpack_from(data, at)
        steps = first + stride * np.arange(n, dtype=np.int64)
    else:
        steps = np.cumsum(np.frombuffer(zlib.decompress(data[at : at + ls]), np.int64))
    return steps, n, at + ls, lt


def decode_steps_values(data: bytes) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Steps and values of a chunk, skipping the times (what an envelope needs)."""
    steps, n, at, lt = _decode_steps(data)
    return steps, np.frombuffer(data, np.float64, count=n, offset=at + lt)


def decode_chunk(data: bytes) -> Points:
    steps, n, at, lt = _decode_steps(data)
    micros = np.cumsum(np.frombuffer(zlib.decompress(data[at : at + lt]), np.int64))
    values = np.frombuffer(data, np.float64, count=n, offset=at + lt)
    return Points(steps, micros.astype(np.float64) / 1e6, values)


@dataclass(frozen=True)
class Stats:
    """Exact aggregate over a contiguous, non-empty step range of a series."""

    first_step: int
    last_step: int
    count: int
    nan_count: int
    vmin: float
    vmax: float
    vsum: float
    vlast: float

    @classmethod
    def of(cls, points: Points) -> Stats:
        v = points.values
        finite = v[~np.isnan(v)]
        has = finite.shape[0] > 0
        with np.errstate(invalid="ignore"):
            vsum = float(finite.sum()) if has else 0.0
        return cls(
            first_step=int(points.steps[0]),
            last_step=int(points.steps[-1]),
            count=len(points),
            nan_count=int(v.shape[0] - finite.shape[0]),
            vmin=float(finite.min()) if has else float("nan"),
            vmax=float(finite.max()) if has else float("nan"),
            vsum=vsum,
            vlast=float(v[-1]),
        )

    @classmethod
    def merge(cls, parts: list[Stats]) -> Stats:
        """Aggregate of consecutive parts, given in step order."""
        return cls(
            first_step=parts[0].first_step,
            last_step=parts[-1].last_step,
            count=sum(p.count for p in parts),
            nan_count=sum(p.nan_count for p in parts),
            vmin=float(np.fmin.reduce([p.vmin for p in parts])),
            vmax=float(np.fmax.reduce([p.vmax for p in parts])),
            vsum=_sum([p.vsum for p in parts]),
            vlast=parts[-1].vlast,
        )


def _sum(values: list[float]) -> float:
    with np.errstate(invalid="ignore"):
        return float(np.sum(values))


@dataclass(frozen=True)
class Units:
    """Disjoint aggregates in step order, as columns: blocks and single points alike."""

    first_step: NDArray[np.int64]
    last_step: NDArray[np.int64]
    count: NDArray[np.int64]
    nan_count: NDArray[np.int64]
    vmin: NDArray[np.float64]
    vmax: NDArray[np.float64]
    vsum: NDArray[np.float64]
    vlast: NDArray[np.float64]

    def __len__(self) -> int:
        return int(self.first_step.shape[0])

    @classmethod
    def from_rows(cls, rows: Sequence[Sequence[float | int | None]]) -> Units:
        """From (first_step, last_step, count, nan_count, vmin, vmax, vsum, vlast) rows; None is NaN."""
        if not rows:
            return cls.concat([])
        table = np.array(rows, dtype=np.float64)  # None becomes NaN; steps stay exact below 2**53
        ints = table[:, :4].astype(np.int64)
        return cls(ints[:, 0], ints[:, 1], ints[:, 2], ints[:, 3],
                   table[:, 4], table[:, 5], table[:, 6], table[:, 7])

    @classmethod
    def from_points(cls, points: Points) -> Units:
        v = points.values
        nan = np.isnan(v)
        return cls(points.steps, points.steps, np.ones(len(points), np.int64), nan.astype(np.int64),
                   v, v, np.where(nan, 0.0, v), v)

    @classmethod
    def concat(cls, parts: list[Units]) -> Units:
        if not parts:
            e_i, e_f = np.empty(0, np.int64), np.empty(0, np.float64)
            return cls(e_i, e_i, e_i, e_i, e_f, e_f, e_f, e_f)
        if len(parts) == 1:
            return parts[0]
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in _UNIT_FIELDS))


_UNIT_FIELDS = ("first_step", "last_step", "count", "nan_count", "vmin", "vmax", "vsum", "vlast")


@dataclass(frozen=True)
class Envelope:
    """Per bucket, in step order: the step range it covers and exact statistics of its points."""

    start_step: NDArray[np.int64]
    end_step: NDArray[np.int64]
    count: NDArray[np.int64]
    nan_count: NDArray[np.int64]
    min: NDArray[np.float64]
    max: NDArray[np.float64]
    mean: NDArray[np.float64]
    last: NDArray[np.float64]

    def __len__(self) -> int:
        return int(self.start_step.shape[0])

    def to_rows(self) -> list[dict[str, float | int]]:
        fields = ("start_step", "end_step", "count", "nan_count", "min", "max", "mean", "last")
        cols = [getattr(self, f).tolist() for f in fields]
        return [dict(zip(fields, row, strict=True)) for row in zip(*cols, strict=True)]


def _bins(first_steps: NDArray[np.int64], start: int, end: int, buckets: int) -> NDArray[np.intp]:
    """Indexes where each non-empty bucket begins; a unit belongs to the bin of its first step."""
    width = float(end - start + 1)
    # The lowest first step of each bin k is the smallest s with floor((s - start) / width * buckets) >= k.
    edges = start + np.ceil(np.arange(buckets) * (width / buckets)).astype(np.int64)
    starts = np.searchsorted(first_steps, edges, side="left")
    starts = starts[starts < first_steps.shape[0]]
    return np.unique(starts)


def _empty() -> Envelope:
    e_i, e_f = np.empty(0, np.int64), np.empty(0, np.float64)
    return Envelope(e_i, e_i, e_i, e_i, e_f, e_f, e_f, e_f)


def bucketize(units: Units, start: int, end: int, buckets: int) -> Envelope:
    """Group units (disjoint, in step order, inside [start, end]) into at most ``buckets`` buckets.

    A unit goes to the equal-width step bin holding its first step; neighbours in one bin merge.
    """
    if len(units) == 0:
        return _empty()
    starts = _bins(units.first_step, start, end, buckets)
    ends = np.concatenate((starts[1:], [len(units)])) - 1
    count = np.add.reduceat(units.count, starts)
    nan_count = np.add.reduceat(units.nan_count, starts)
    with np.errstate(invalid="ignore"):  # +inf and -inf in one bucket: their sum and mean are NaN
        vsum = np.add.reduceat(units.vsum, starts)
    return _envelope(units.first_step[starts], units.last_step[ends], count, nan_count,
                     np.fmin.reduceat(units.vmin, starts), np.fmax.reduceat(units.vmax, starts), vsum,
                     units.vlast[ends])


def bucketize_points(steps: NDArray[np.int64], values: NDArray[np.float64], start: int, end: int,
                     buckets: int) -> Envelope:
    """``bucketize`` of raw points (sorted by step, all inside [start, end]), without building units."""
    if steps.shape[0] == 0:
        return _empty()
    starts = _bins(steps, start, end, buckets)
    ends = np.concatenate((starts[1:], [steps.shape[0]])) - 1
    nan = np.isnan(values)
    with np.errstate(invalid="ignore"):
        vsum = np.add.reduceat(np.where(nan, 0.0, values), starts)
    return _envelope(steps[starts], steps[ends], ends - starts + 1, np.add.reduceat(nan, starts, dtype=np.int64),
                     np.fmin.reduceat(values, starts), np.fmax.reduceat(values, starts), vsum, values[ends])


def _envelope(start_step: NDArray[np.int64], end_step: NDArray[np.int64], count: NDArray[np.int64],
              nan_count: NDArray[np.int64], vmin: NDArray[np.float64], vmax: NDArray[np.float64],
              vsum: NDArray[np.float64], last: NDArray[np.float64]) -> Envelope:
    valid = count - nan_count
    with np.errstate(invalid="ignore"):
        mean = np.where(valid > 0, vsum / np.maximum(valid, 1), np.nan)
    return Envelope(start_step, end_step, count.astype(np.int64), nan_count.astype(np.int64), vmin, vmax,
                    mean, last)
