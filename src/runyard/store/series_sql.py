"""The SQL half of the time-series store: chunks and blocks read and written over a connection.

See ``series.py`` for the layout. Appends rewrite only the suffix of a series that the new points
touch: in the common case (steps increasing) that is the last, partly filled chunk. Level-k blocks
are kept for every complete group of FANOUT sealed children (the last chunk, still filling, is never
rolled up), so the number of blocks per level is derived, never stored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from runyard.errors import InvalidArgument, NotFound
from runyard.store import limits, notify, runs_sql
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
    pack_chunks,
)

if TYPE_CHECKING:
    from numpy.typing import NDArray

_B = metric_blocks.c
_C = metric_chunks.c
_S = metric_series.c
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


def _chunk_blobs_many(conn: Connection, ranges: dict[int, tuple[int, int]]) -> dict[int, list[bytes]]:
    """The blobs of chunks first..last of each series, in ordinal order."""
    blobs: dict[int, list[bytes]] = {sid: [] for sid in ranges}
    items = [(sid, first, last) for sid, (first, last) in sorted(ranges.items())]
    if conn.dialect.name == "postgresql":
        # psycopg sends bytea as hex text unless asked for binary: binary halves the bytes and
        # saves most of the decoding, which dominates a zoomed-in envelope.
        with conn.connection.driver_connection.cursor(binary=True) as cur:  # type: ignore[union-attr]
            for part in limits.batches(conn, items, params=3, terms=1):
                where = " OR ".join(["(series_id = %s AND ordinal >= %s AND ordinal <= %s)"] * len(part))
                cur.execute(f"SELECT series_id, data FROM metric_chunks WHERE {where} ORDER BY series_id, ordinal",
                            [x for item in part for x in item])
                for sid, data in cur.fetchall():
                    blobs[sid].append(bytes(data))
        return blobs
    for cond, params in limits.any_of(conn, items, _chunks_between):
        for sid, data in conn.execute(sa.select(_C.series_id, _C.data).where(cond).order_by(_C.series_id, _C.ordinal),
                                      params):
            blobs[sid].append(bytes(data))
    return blobs


# The terms of the OR chains below (see limits.any_of): one per series, or per series and level.

def _chunks_between(series_id: Any, first: Any, last: Any) -> sa.ColumnElement[bool]:
    return sa.and_(_C.series_id == series_id, _C.ordinal >= first, _C.ordinal <= last)


def _chunks_from(series_id: Any, first: Any) -> sa.ColumnElement[bool]:
    return sa.and_(_C.series_id == series_id, _C.ordinal >= first)


def _blocks_from(series_id: Any, level: Any, first: Any) -> sa.ColumnElement[bool]:
    return sa.and_(_B.series_id == series_id, _B.level == level, _B.ordinal >= first)


def _blocks_between(series_id: Any, level: Any, first: Any, end: Any) -> sa.ColumnElement[bool]:
    return sa.and_(_B.series_id == series_id, _B.level == level, _B.ordinal >= first, _B.ordinal < end)


def _blocks_reaching(series_id: Any, step: Any) -> sa.ColumnElement[bool]:
    return sa.and_(_B.series_id == series_id, _B.last_step >= step)


def _block_at(series_id: Any, ordinal: Any) -> sa.ColumnElement[bool]:
    return sa.and_(_B.series_id == series_id, _B.ordinal == ordinal)


def _chunk_blobs(conn: Connection, series_id: int, first: int, last: int) -> list[bytes]:
    return _chunk_blobs_many(conn, {series_id: (first, last)})[series_id]


def _concat(parts: list[Points]) -> Points:
    if not parts:
        return Points.empty()
    if len(parts) == 1:
        return parts[0]
    return Points(
        np.concatenate([p.steps for p in parts]),
        np.concatenate([p.times for p in parts]),
        np.concatenate([p.values for p in parts]),
    )


def _decode_range(conn: Connection, series_id: int, first: int, last: int) -> Points:
    return _concat([decode_chunk(b) for b in _chunk_blobs(conn, series_id, first, last)])


def _decode_ranges(conn: Connection, ranges: dict[int, tuple[int, int]]) -> dict[int, Points]:
    """The points of chunks first..last of each series, read in one query."""
    return {sid: _concat([decode_chunk(b) for b in blobs]) for sid, blobs in _chunk_blobs_many(conn, ranges).items()}


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
    return append_many(conn, [(row, new)], chunk_points)[0]


def append_many(conn: Connection, items: Sequence[tuple[SeriesRow, Points]],
                chunk_points: int = CHUNK_POINTS) -> list[SeriesRow]:
    """Add points to several series (inside the caller's write transaction); returns the updated rows.

    The statements are the same few for up to several hundred series, then a few more per slice
    the database's limits allow (statements, not rows, are what an append pays for, above all over
    a network): per series, only the suffix the new points touch is rewritten, in the common case
    (steps increasing) the last, partly filled chunk."""
    out = [row for row, _ in items]
    work = [(i, row, new) for i, (row, new) in enumerate(items) if len(new)]
    if not work:
        return out
    starts = _rewrite_starts(conn, [(row, new) for _, row, new in work], chunk_points)
    old = _decode_ranges(conn, {row.id: (starts[row.id], row.chunk_count - 1) for _, row, _ in work
                                if starts[row.id] < row.chunk_count})
    plans = []
    for i, row, new in work:
        j = starts[row.id]
        merged = old[row.id].concat(new) if row.id in old else new
        pieces, stats = pack_chunks(merged, chunk_points)
        plans.append((i, row, new, j, merged, pieces, stats))
    wanted = [w for _, row, _, j, _, pieces, _ in plans
              for w in _children_wanted(row.id, j, level_counts(row.chunk_count), level_counts(j + len(pieces)))]
    old_children = _read_blocks(conn, wanted)
    chunk_rows: list[dict[str, object]] = []
    block_rows: list[dict[str, object]] = []
    updates: list[dict[str, object]] = []
    for i, row, new, j, merged, pieces, stats in plans:
        new_n = j + len(pieces)
        chunk_rows += [{"series_id": row.id, "ordinal": j + k, "data": data} for k, data in enumerate(pieces)]
        block_rows += [_block_row(row.id, 0, j + k, st) for k, st in enumerate(stats)]
        block_rows += _roll_up(row.id, j, level_counts(row.chunk_count), level_counts(new_n), stats, old_children)
        first_step = int(new.steps[0]) if row.first_step is None else min(row.first_step, int(new.steps[0]))
        last = len(merged) - 1
        updates.append({"b_id": row.id, "b_count": row.count + len(new), "b_first": first_step,
                        "b_last": int(merged.steps[last]), "b_value": _nan_to_null(float(merged.values[last])),
                        "b_time": float(merged.times[last]), "b_chunks": new_n})
        out[i] = SeriesRow(row.id, row.count + len(new), first_step, int(merged.steps[last]), new_n)
    for cond, params in limits.any_of(conn, [(row.id, j) for _, row, _, j, *_ in plans], _chunks_from):
        conn.execute(sa.delete(metric_chunks).where(cond), params)
    stale = [(row.id, level, j // FANOUT**level) for _, row, _, j, *_ in plans
             for level in range(len(level_counts(row.chunk_count)))]
    for cond, params in limits.any_of(conn, stale, _blocks_from):
        conn.execute(sa.delete(metric_blocks).where(cond), params)
    conn.execute(sa.insert(metric_chunks), chunk_rows)
    conn.execute(sa.insert(metric_blocks), block_rows)
    s = metric_series.c
    conn.execute(
        sa.update(metric_series).where(s.id == sa.bindparam("b_id")).values(
            point_count=sa.bindparam("b_count"), first_step=sa.bindparam("b_first"), last_step=sa.bindparam("b_last"),
            last_value=sa.bindparam("b_value"), last_time=sa.bindparam("b_time"), chunk_count=sa.bindparam("b_chunks")),
        updates,
    )
    return out


def _rewrite_starts(conn: Connection, work: list[tuple[SeriesRow, Points]], chunk_points: int) -> dict[int, int]:
    """Per series, the ordinal of the first chunk to rewrite."""
    appending = [row for row, new in work
                 if row.chunk_count and row.last_step is not None and int(new.steps[0]) >= row.last_step]
    tails: dict[int, Any] = {}
    for cond, params in limits.any_of(conn, [(row.id, row.chunk_count - 1) for row in appending], _block_at):
        rows = conn.execute(sa.select(_B.series_id, _B.point_count, _B.last_step).where(_B.level == 0, cond), params)
        tails.update((r.series_id, r) for r in rows)
    # The others go back in steps (a run resumed from a checkpoint): the first chunk reaching their
    # first new step. Blocks of a level are sorted by step, so it is the lowest such ordinal.
    reached: dict[int, int] = {}
    rewinding = [(row.id, int(new.steps[0])) for row, new in work if row.chunk_count and row.id not in tails]
    for cond, params in limits.any_of(conn, rewinding, _blocks_reaching):
        firsts = conn.execute(sa.select(_B.series_id, sa.func.min(_B.ordinal)).where(_B.level == 0, cond)
                              .group_by(_B.series_id), params)
        reached.update((int(sid), int(ordinal)) for sid, ordinal in firsts)
    starts = {}
    for row, new in work:
        n, first_new = row.chunk_count, int(new.steps[0])
        if n == 0:
            starts[row.id] = 0
        elif row.id in tails:
            # Appending: rewrite the tail chunk if it has room, or if it ends with the step we continue.
            tail = tails[row.id]
            starts[row.id] = n - 1 if (tail.point_count < chunk_points or tail.last_step == first_new) else n
        else:
            starts[row.id] = reached.get(row.id, n - 1)
    return starts


def _retained(level: int, j: int, old_counts: list[int]) -> int:
    """Blocks of ``level`` that stay as they are when chunks from ordinal ``j`` on are rewritten."""
    return min(old_counts[level], j // FANOUT**level) if level < len(old_counts) else 0


def _children_wanted(series_id: int, j: int, old_counts: list[int],
                     new_counts: list[int]) -> list[tuple[int, int, int, int]]:
    """(series, level, from, to) of the old blocks that share a rebuilt group with new ones (fewer
    than FANOUT per level)."""
    wanted = []
    for level in range(1, len(new_counts)):
        lo, hi = _retained(level, j, old_counts) * FANOUT, _retained(level - 1, j, old_counts)
        if lo < hi:
            wanted.append((series_id, level - 1, lo, hi))
    return wanted


def _read_blocks(conn: Connection, wanted: list[tuple[int, int, int, int]]) -> dict[tuple[int, int, int], Stats]:
    out: dict[tuple[int, int, int], Stats] = {}
    for cond, params in limits.any_of(conn, wanted, _blocks_between):
        rows = conn.execute(sa.select(_B.series_id, _B.level, _B.ordinal, *_STAT_COLUMNS).where(cond), params)
        out.update(((r.series_id, r.level, r.ordinal), _stats_of_row(r)) for r in rows)
    return out


def _roll_up(series_id: int, j: int, old_counts: list[int], new_counts: list[int], new_chunks: list[Stats],
             old: dict[tuple[int, int, int], Stats]) -> list[dict[str, object]]:
    """Rows of the level >= 1 blocks that change, computed level by level in memory."""
    current = {j + i: s for i, s in enumerate(new_chunks)}
    out: list[dict[str, object]] = []
    for level in range(1, len(new_counts)):
        below = current
        current = {}
        for g in range(_retained(level, j, old_counts), new_counts[level]):
            children = [below[o] if o in below else old[(series_id, level - 1, o)]
                        for o in range(g * FANOUT, (g + 1) * FANOUT)]
            current[g] = Stats.merge(children)
            out.append(_block_row(series_id, level, g, current[g]))
    return out


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


# -- a run's series, by key ---------------------------------------------------------------------------

#: The most buckets one envelope may ask for.
MAX_BUCKETS = 100_000


def append_points(conn: Connection, run: int, series: Mapping[str, Points], chunk_points: int | None = None) -> None:
    """Add points to several series of ``run`` (created if new); ``chunk_points``: None for CHUNK_POINTS."""
    keys = sorted(series)  # a fixed order: concurrent writers lock series alike
    rows = locked_rows(conn, run, keys)
    append_many(conn, [(rows[key], series[key]) for key in keys], chunk_points or CHUNK_POINTS)
    notify.touch(conn, run)


def locked_rows(conn: Connection, run: int, keys: Sequence[str]) -> dict[str, SeriesRow]:
    """The rows of these series of a run, created if new, locked until the transaction ends."""
    limits.insert_ignore(conn, metric_series,
                         [{"run_number": run, "key": key, "point_count": 0, "chunk_count": 0} for key in keys],
                         ["run_number", "key"])
    rows: dict[str, SeriesRow] = {}
    for part in limits.batches(conn, keys):  # in key order, as every writer locks them
        found = conn.execute(
            sa.select(_S.id, _S.key, _S.point_count, _S.first_step, _S.last_step, _S.chunk_count)
            .where(_S.run_number == run, _S.key.in_(part)).order_by(_S.key).with_for_update()
        )
        rows.update((r.key, SeriesRow(r.id, r.point_count, r.first_step, r.last_step, r.chunk_count))
                    for r in found)
    return rows


def existing_row(conn: Connection, run: int, key: str) -> SeriesRow:
    """The row of the series ``key`` of ``run``; NotFound if the run or the series does not exist."""
    row = conn.execute(
        sa.select(_S.id, _S.point_count, _S.first_step, _S.last_step, _S.chunk_count)
        .where(_S.run_number == run, _S.key == key)
    ).one_or_none()
    if row is None:
        runs_sql.require_run(conn, run)
        raise NotFound(f"run {run} has no metric {key!r}")
    return SeriesRow(row.id, row.point_count, row.first_step, row.last_step, row.chunk_count)


def check_window(buckets: int, start: int | None, end: int | None) -> None:
    """Refuse an envelope's arguments that no series could answer."""
    if not 1 <= buckets <= MAX_BUCKETS:
        raise InvalidArgument(f"buckets must be between 1 and {MAX_BUCKETS}, not {buckets}")
    if start is not None and end is not None and start > end:
        raise InvalidArgument(f"start step {start} is after end step {end}")
