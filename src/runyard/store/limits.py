"""What one SQL statement may carry, and ``batches``, which cuts caller-sized lists to fit.

Statements built from lists a caller sizes (IN lists, multi-row VALUES, OR chains of per-series
ranges) meet two walls. Bind parameters: PostgreSQL's protocol counts them in 16 bits (65,535 per
statement); SQLite allows what its build says (999 before 3.32, 32,766 since, 250,000 in Debian's),
read from the connection. Expression depth, on SQLite only: ``a OR b OR c ...`` parses as a
left-deep tree, so an OR chain of n terms is n levels deep, and SQLite refuses 1,000. PostgreSQL
flattens OR lists, but a long one makes a plan costly enough for its JIT to compile the condition,
and LLVM took over an hour on 10,000 terms, deaf to cancel requests: so no statement carries more
than ``MAX_ITEMS`` items. Every statement built from such a list runs once per slice that
``batches`` yields, inside the caller's transaction, so the result is the same as one statement's;
``insert_ignore`` inserts a caller-sized list of rows so, skipping those whose key exists.

``refusal`` tells a database's deterministic refusal of a value (a NUL character in PostgreSQL text,
an integer beyond a column's range, a statement over a limit) from a transient failure (locked,
unreachable), so a batch that can never be stored is reported as such, not retried forever.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:  # SQLAlchemy loads where statements are built: lite.py's fast path stays without it
    import sqlalchemy as sa
    from sqlalchemy.engine import Connection
    from sqlalchemy.sql.elements import ColumnElement

T = TypeVar("T")

#: The largest integer both engines keep in an integer column (a run number, a sequence number).
INT64_MAX = (1 << 63) - 1

#: PostgreSQL's wire protocol: a 16-bit count of parameters per statement.
POSTGRES_PARAMS = 65_535
#: Parameters and OR levels kept for the rest of a statement (its fixed conditions, subqueries).
_HEADROOM = 32
#: Items per statement, whatever the limits allow: planning and compiling a statement grow faster
#: than its size, and past a few hundred terms fewer round trips no longer pay for it.
MAX_ITEMS = 500


@dataclass(frozen=True)
class Limits:
    """What one statement may carry on a connection."""

    #: Bind parameters in one statement.
    params: int
    #: Depth of one expression (None: no limit that an OR chain could reach).
    depth: int | None

    def per_statement(self, params: int = 1, terms: int = 0) -> int:
        """How many items fit in one statement when each takes ``params`` bind parameters and
        ``terms`` terms of one OR chain (each term nests one level deeper on SQLite)."""
        fit = min(MAX_ITEMS, (self.params - _HEADROOM) // max(params, 1))
        if terms and self.depth is not None:
            fit = min(fit, (self.depth - _HEADROOM) // (2 * terms))  # half: room for each term's own depth
        return max(fit, 1)


def sqlite_limits(raw: sqlite3.Connection) -> Limits:
    return Limits(raw.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER), raw.getlimit(sqlite3.SQLITE_LIMIT_EXPR_DEPTH))


def limits_of(conn: Connection) -> Limits:
    if conn.dialect.name == "sqlite":
        raw = conn.connection.driver_connection
        assert isinstance(raw, sqlite3.Connection)
        return sqlite_limits(raw)
    return Limits(POSTGRES_PARAMS, None)


def batches(on: Limits | Connection, items: Sequence[T], params: int = 1, terms: int = 0) -> Iterator[Sequence[T]]:
    """Consecutive slices of ``items``, each small enough for one statement on ``on`` (a connection,
    or its limits; see ``Limits.per_statement``); none when ``items`` is empty."""
    size = (on if isinstance(on, Limits) else limits_of(on)).per_statement(params, terms)
    for start in range(0, len(items), size):
        yield items[start : start + size]


def insert_ignore(conn: Connection, table: sa.Table, values: dict[str, Any] | list[dict[str, Any]],
                  keys: Sequence[str]) -> None:
    """Insert one row, or several (in as few statements as the database's limits allow),
    skipping those whose ``keys`` exist."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
    rows = [values] if isinstance(values, dict) else values
    for part in batches(conn, rows, params=len(rows[0]) if rows else 1):
        conn.execute(insert(table).values(list(part)).on_conflict_do_nothing(index_elements=list(keys)))


def any_of(conn: Connection, items: Sequence[tuple[Any, ...]],
           term: Callable[..., ColumnElement[bool]]) -> Iterator[tuple[ColumnElement[bool], dict[str, Any]]]:
    """``term(*item) OR term(*next item) OR ...`` with its parameters, one condition per slice of
    ``items`` that one statement can carry; none when ``items`` is empty. Run the statement once
    per condition: its rows are the union of what one statement would find.

    ``term`` receives bind parameters, one per field of an item, and must build the same condition
    from any (a module-level function): each shape is built once and kept, because building
    thousands of SQLAlchemy terms costs far more than running the statement."""
    if not items:
        return
    width = len(items[0])
    most = limits_of(conn).per_statement(width, terms=1)
    for part in batches(conn, items, params=width, terms=1):
        size = min(_shape(len(part)), most)
        padded = [*part, *[part[-1]] * (size - len(part))]  # a repeated term changes no OR's result
        yield _or_chain(term, width, size), {f"p{i}_{j}": v for i, item in enumerate(padded)
                                             for j, v in enumerate(item)}


def _shape(n: int) -> int:
    """The next power of two: a handful of statement shapes, whatever the list sizes."""
    return 1 << (n - 1).bit_length()


@functools.lru_cache(maxsize=256)
def _or_chain(term: Callable[..., ColumnElement[bool]], width: int, size: int) -> ColumnElement[bool]:
    import sqlalchemy as sa

    return sa.or_(*(term(*(sa.bindparam(f"p{i}_{j}") for j in range(width))) for i in range(size)))


# Messages of refusals that depend on the statement, not on the moment: sending it again fails again.
_SQLITE_REFUSALS = ("too many sql variables", "expression tree is too large", "string or blob too big",
                    "too many terms in compound select")
_POSTGRES_CLIENT_REFUSALS = ("number of parameters must be between",)


def refusal(exc: BaseException) -> str | None:
    """The reason, if ``exc`` is the database refusing this statement's content (it would fail
    again, whenever sent); None for anything else (locked, unreachable, a bug)."""
    import sqlalchemy.exc

    if isinstance(exc, OverflowError):  # sqlite3: "Python int too large to convert to SQLite INTEGER"
        return str(exc) if "SQLite" in str(exc) else None
    if not isinstance(exc, sqlalchemy.exc.DBAPIError):
        return None
    orig = exc.orig
    reason = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    if isinstance(exc, sqlalchemy.exc.DataError):  # PostgreSQL class 22: a value the column cannot hold
        return reason
    sqlstate = getattr(orig, "sqlstate", None)
    if isinstance(sqlstate, str) and sqlstate.startswith("54"):  # PostgreSQL: program limit exceeded
        return reason
    lowered = reason.lower()
    if isinstance(orig, sqlite3.Error) and any(m in lowered for m in _SQLITE_REFUSALS):
        return reason
    if any(m in lowered for m in _POSTGRES_CLIENT_REFUSALS):
        return reason
    return None
