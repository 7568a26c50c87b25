"""The SQL half of the time-series store: chunks and blocks read and written over a connection.

See ``series.py`` for the layout. Appends rewrite only the suffix of a series that the new points
touch: in the common case (steps increasing) that is the last, partly filled chunk. Level-k blocks
are kept for every complete group of FANOUT sealed children (the last chunk, still filling, is never
rolled up), so the number of blocks per level is derived, never stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from runyard.store.schema import metric_blocks, metric_chunks, metric_series
from runyard.store.series import (
    CHUNK_POINTS,
    FANOUT,
    Envelope,
    Points,
    Stats,
    Units,
    bucketize,
    bucketize_points,
    decode_chunk,
    decode_steps_values,
    encode_chunk,
)

if TYPE_CHECKING:
    from numpy.typing import NDArray

_B = metric_blocks.c
_STAT_COLUMNS = (_B.first_step, _B.last_step, _B.point_count, _B.nan_count, _B.vmin, _B.vmax, _B.vsum, _B.vlast)


@dataclass(frozen=True)
class SeriesRow:
    id: int
    count: int
    first_step: int | None
    last_step: int | None
    chunk_count: int


def level_counts(chunk_count: int) -> list[int]:
    """Blocks per level (level 0 first) for a series of ``chunk_count`` chunks."""
    counts = [chunk_count]
    sealed = max(chunk_count - 1, 0)
    while (sealed := sealed // FANOUT) > 0:
        counts.append(sealed)
    return counts


def _nan_to_null(x: float) -> float | None:
    return None if x != x else x


def _block_row(series_id: int, level: int, ordinal: int, s: Stats) -> dict[str, object]:
    return {
        "series_id": series_id, "level": level, "ordinal": ordinal,
        "first_step": s.first_step, "last_step": s.last_step, "point_count": s.count, "nan_count": s.nan_count,
        "vmin": _nan_to_null(s.vmin), "vmax": _nan_to_null(s.vmax),
        "vsum": _nan_to_null(s.vsum), "vlast": _nan_to_null(s.vlast),
    }


def _stats_of_row(r: sa.Row[*tuple[Any, ...]]) -> Stats:
    def f(x: float | None) -> float:
        return float("nan") if x is None else float(x)

    return Stats(int(r.first_step), int(r.last_step), int(r.point_count), int(r.nan_count),
                 f(r.vmin), f(r.vmax), f(r.vsum), f(r.vlast))


def _chunk_blobs(conn: Connection, series_id: int, first: int, last: int) -> list[bytes]:
    if conn.dialect.name == "postgresql":
        # psycopg sends bytea as hex text unless asked for binary: binary halves the bytes and
        # saves most of the decoding, which dominates a zoomed-in envelope.
        with conn.connection.driver_connection.cursor(binary=True) as cur:  # type: ignore[union-attr]
            cur.execute(
                "SELECT data FROM metric_chunks WHERE series_id = %s AND ordinal >= %s AND ordinal <= %s"
                " ORDER BY ordinal",
                (series_id, first, last),
            )
            return [bytes(row[0]) for row in cur.fetchall()]
    c = metric_chunks.c
    return [
        bytes(b)
        for b in conn.execute(
            sa.select(c.data)
            .where(c.series_id == series_id, c.ordinal >= first, c.ordinal <= last)
            .order_by(c.ordinal)
        ).scalars()
    ]


def _decode_range(conn: Connection, series_id: int, first: int, last: int) -> Points:
    parts = [decode_chunk(b) for b in _chunk_blobs(conn, series_id, first, last)]
    if not parts:
        return Points.empty()
    if len(parts) == 1:
        return parts[0]
    return Points(
        np.concatenate([p.steps for p in parts]),
        np.concatenate([p.times for p in parts]),
        np.concatenate([p.values for p in parts]),
    )


def _steps_values(conn: Connection, series_id: int, first: int, last: int, lo: int,
                  hi: int) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Steps and values of the points in [lo, hi] held by chunks first..last."""
    parts = [decode_steps_values(b) for b in _chunk_blobs(conn, series_id, first, last)]
    if not parts:
        return np.empty(0, np.int64), np.empty(0, np.float64)
    steps = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
    values = np.concatenate([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
    a, b = np.searchsorted(steps, [lo, hi + 1])
    return steps[a:b], values[a:b]


def _first_ordinal_reaching(conn: Connection, series_id: int, level: int, step: int) -> int | None:
    """Ordinal of the first block at ``level`` whose last step is >= ``step``."""
    return conn.execute(
        sa.select(_B.ordinal)
        .where(_B.series_id == series_id, _B.level == level, _B.last_step >= step)
        .order_by(_B.last_step)
        .limit(1)
    ).scalar()


def append(conn: Connection, row: SeriesRow, new: Points, chunk_points: int = CHUNK_POINTS) -> SeriesRow:
    """Add points to a series (inside the caller's write transaction); returns the updated row."""
    if len(new) == 0:
        return row
    n = row.chunk_count
    first_new = int(new.steps[0])
    if n == 0:
        j = 0
    elif row.last_step is not None and first_new >= row.last_step:
        # Appending: rewrite the tail chunk if it has room, or if it ends with the step we continue.
        tail = conn.execute(
            sa.select(_B.point_count, _B.last_step).where(_B.series_id == row.id, _B.level == 0, _B.ordinal == n - 1)
        ).one()
        j = n - 1 if (tail.point_count < chunk_points or tail.last_step == first_new) else n
    else:
        reached = _first_ordinal_reaching(conn, row.id, 0, first_new)
        j = n - 1 if reached is None else reached
    old = _decode_range(conn, row.id, j, n - 1) if j < n else Points.empty()
    merged = old.concat(new)
    pieces = merged.chunks(chunk_points)

    old_counts = level_counts(n)
    conn.execute(sa.delete(metric_chunks).where(metric_chunks.c.series_id == row.id, metric_chunks.c.ordinal >= j))
    for level in range(len(old_counts)):
        conn.execute(
            sa.delete(metric_blocks).where(
                _B.series_id == row.id, _B.level == level, _B.ordinal >= j // FANOUT**level
            )
        )
    conn.execute(
        sa.insert(metric_chunks),
        [{"series_id": row.id, "ordinal": j + i, "data": encode_chunk(p)} for i, p in enumerate(pieces)],
    )
    stats = [Stats.of(p) for p in pieces]
    conn.execute(sa.insert(metric_blocks), [_block_row(row.id, 0, j + i, s) for i, s in enumerate(stats)])

    new_n = j + len(pieces)
    new_counts = level_counts(new_n)
    for level in range(1, len(new_counts)):
        kept = min(old_counts[level] if level < len(old_counts) else 0, j // FANOUT**level)
        if kept >= new_counts[level]:
            continue
        children = conn.execute(
            sa.select(*_STAT_COLUMNS)
            .where(
                _B.series_id == row.id, _B.level == level - 1,
                _B.ordinal >= kept * FANOUT, _B.ordinal < new_counts[level] * FANOUT,
            )
            .order_by(_B.ordinal)
        ).all()
        child_stats = [_stats_of_row(c) for c in children]
        conn.execute(
            sa.insert(metric_blocks),
            [
                _block_row(row.id, level, kept + g,
                           Stats.merge(child_stats[g * FANOUT : (g + 1) * FANOUT]))
                for g in range(new_counts[level] - kept)
            ],
        )

    first_step = first_new if row.first_step is None else min(row.first_step, first_new)
    last = len(merged) - 1
    conn.execute(
        sa.update(metric_series)
        .where(metric_series.c.id == row.id)
        .values(
            point_count=row.count + len(new),
            first_step=first_step,
            last_step=int(merged.steps[last]),
            last_value=_nan_to_null(float(merged.values[last])),
            last_time=float(merged.times[last]),
            chunk_count=new_n,
        )
    )
    return SeriesRow(row.id, row.count + len(new), first_step, int(merged.steps[last]), new_n)


_Row = tuple[int, int, int, int, int, float | None, float | None, float | None, float | None]


def _blocks_overlapping(conn: Connection, series_id: int, level: int, lo: int, hi: int) -> list[_Row]:
    """(ordinal, first_step, last_step, count, nan_count, vmin, vmax, vsum, vlast) rows, in step order."""
    # Both bounds are seeks on (series_id, level, last_step): blocks are disjoint and sorted, so
    # the blocks overlapping [lo, hi] end at the first block whose last step reaches hi.
    end = (
        sa.select(_B.last_step)
        .where(_B.series_id == series_id, _B.level == level, _B.last_step >= hi)
        .order_by(_B.last_step)
        .limit(1)
        .scalar_subquery()
    )
    rows = conn.execute(
        sa.select(_B.ordinal, *_STAT_COLUMNS)
        .where(
            _B.series_id == series_id, _B.level == level, _B.last_step >= lo,
            _B.last_step <= sa.func.coalesce(end, 2**62),
        )
        .order_by(_B.last_step)
    ).all()
    return [tuple(r) for r in rows if r.first_step <= hi]


def _cover(conn: Connection, series_id: int, level: int, lo: int, hi: int) -> list[Units]:
    """Units that together hold exactly the points with step in [lo, hi], in step order.

    Only the first and the last block can stick out of [lo, hi]: they are replaced by the finer
    level's cover of their overlap (at level 0, by their decoded points).
    """
    if lo > hi:
        return []
    rows = _blocks_overlapping(conn, series_id, level, lo, hi)
    out: list[Units] = []
    if not rows:
        return _cover(conn, series_id, level - 1, lo, hi) if level > 0 else out

    def partial(r: _Row) -> bool:
        return r[1] < lo or r[2] > hi

    def split(r: _Row) -> list[Units]:
        a, b = max(lo, r[1]), min(hi, r[2])
        if level == 0:
            steps, values = _steps_values(conn, series_id, r[0], r[0], a, b)
            return [Units.from_points(Points(steps, np.zeros(steps.shape[0]), values))]
        return _cover(conn, series_id, level - 1, a, b)

    first, stop = 0, len(rows)
    if partial(rows[0]):
        out.extend(split(rows[0]))
        first = 1
    last_partial = stop > first and partial(rows[-1])
    if last_partial:
        stop -= 1
    if stop > first:
        out.append(Units.from_rows([r[1:] for r in rows[first:stop]]))
    if last_partial:
        out.extend(split(rows[-1]))
    covered_to = min(hi, rows[-1][2])
    if level > 0 and covered_to < hi:
        # Past the last block of this level lie points not yet rolled up (the series' tail).
        out.extend(_cover(conn, series_id, level - 1, covered_to + 1, hi))
    return out


def envelope(conn: Connection, row: SeriesRow, buckets: int, start: int | None, end: int | None) -> Envelope:
    if row.count == 0 or row.first_step is None or row.last_step is None:
        return bucketize(Units.concat([]), 0, 0, buckets)
    lo = row.first_step if start is None else max(start, row.first_step)
    hi = row.last_step if end is None else min(end, row.last_step)
    if lo > hi:
        return bucketize(Units.concat([]), 0, 0, buckets)
    first = _first_ordinal_reaching(conn, row.id, 0, lo)
    last = _first_ordinal_reaching(conn, row.id, 0, hi)
    assert first is not None and last is not None
    chunks_in_range = last - first + 1
    if chunks_in_range * 2 < buckets:
        # Zoomed in: few enough points to bucket exactly from the raw values.
        steps, values = _steps_values(conn, row.id, first, last, lo, hi)
        return bucketize_points(steps, values, lo, hi, buckets)
    counts = level_counts(row.chunk_count)
    level = 0
    while level + 1 < len(counts) and chunks_in_range // FANOUT ** (level + 1) >= buckets:
        level += 1
    units = Units.concat(_cover(conn, row.id, level, lo, hi))
    return bucketize(units, lo, hi, buckets)


def history(conn: Connection, row: SeriesRow, start: int | None, end: int | None) -> Points:
    if row.count == 0 or row.first_step is None or row.last_step is None:
        return Points.empty()
    lo = row.first_step if start is None else start
    hi = row.last_step if end is None else end
    if lo > hi:
        return Points.empty()
    first = _first_ordinal_reaching(conn, row.id, 0, lo)
    if first is None:
        return Points.empty()
    last = _first_ordinal_reaching(conn, row.id, 0, hi)
    points = _decode_range(conn, row.id, first, row.chunk_count - 1 if last is None else last)
    return points.between(lo, hi)
