"""What series a run has, with their last values: read from ``metric_series`` alone, so listing
them loads no numpy (series_sql.py, which reads and writes the points, does)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from runyard.store.api import SeriesInfo
from runyard.store.schema import metric_series

_S = metric_series.c


def list_series(conn: Connection, run: int) -> list[SeriesInfo]:
    """The series of ``run``, by key (a NaN last value is stored as NULL)."""
    rows = conn.execute(
        sa.select(_S.key, _S.point_count, _S.first_step, _S.last_step, _S.last_value, _S.last_time)
        .where(_S.run_number == run)
        .order_by(_S.key)
    )
    return [
        SeriesInfo(r.key, r.point_count, r.first_step, r.last_step,
                   float("nan") if r.last_value is None and r.point_count else r.last_value, r.last_time)
        for r in rows
    ]
