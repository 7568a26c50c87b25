"""Engines for the two supported databases, configured the way runyard needs them.

SQLite runs in WAL mode (readers never block the writer), with a busy timeout, foreign keys on, and
``synchronous=NORMAL``: a power cut may lose the last transactions but never corrupts the file, and
the spool, not the database, is the durable record. Write transactions start with
``BEGIN IMMEDIATE`` so a read that turns into a write cannot fail half way with SQLITE_BUSY.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url

from runyard.errors import ConfigError
from runyard.store import jsonvalues

#: Execution option that makes a SQLite transaction take the write lock at BEGIN.
IMMEDIATE = "runyard_immediate"

BUSY_TIMEOUT_S = 30.0


def dialect_of(url: str) -> str:
    try:
        return make_url(url).get_backend_name()
    except sa.exc.ArgumentError:
        raise ConfigError(
            f"db {url!r} is not a database URL; expected sqlite:///PATH or postgresql+psycopg://HOST/DB"
        ) from None


def masked(url: str) -> str:
    """The URL with any password hidden, for messages and ``runyard doctor``."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return url


def create_engine(url: str) -> Engine:
    """An engine for ``url``; connects lazily (no I/O here)."""
    backend = dialect_of(url)
    common: dict[str, Any] = {"json_serializer": jsonvalues.dumps, "json_deserializer": jsonvalues.loads}
    if backend == "sqlite":
        engine = sa.create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_S}, **common)
        _configure_sqlite(engine)
        return engine
    if backend == "postgresql":
        if make_url(url).get_driver_name() not in ("psycopg", "psycopg2"):
            raise ConfigError(f"db {masked(url)!r}: use the psycopg driver, as postgresql+psycopg://...")
        return sa.create_engine(url, pool_pre_ping=True, **common)
    raise ConfigError(f"db {masked(url)!r}: runyard supports sqlite and postgresql, not {backend}")


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, record: Any) -> None:
        # Let SQLAlchemy's begin event, not the driver, decide when transactions start.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        immediate = conn.get_execution_options().get(IMMEDIATE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def make_durable(engine: Engine) -> None:
    """Force what is committed to disk now, whatever ``synchronous`` allows to wait.

    SQLite with ``synchronous=NORMAL`` syncs its WAL only at checkpoints: a power cut can lose the
    last commits. Before a spool is retired (its records then live only in the database), those
    commits must be on disk. One commit under ``synchronous=FULL`` syncs the WAL, and with it every
    commit before it. (Not an fsync of the files from here: opening and closing a database file
    behind SQLite's back drops its POSIX locks.) PostgreSQL's commits are durable already.
    """
    if engine.dialect.name != "sqlite":
        return
    raw = engine.raw_connection()  # the driver's connection: pragmas outside any transaction
    try:
        cursor = raw.cursor()
        cursor.execute("PRAGMA synchronous=FULL")
        try:
            cursor.execute("BEGIN IMMEDIATE")
            try:
                # Rewrites one row as it is: a page to commit, so that the commit syncs the WAL.
                cursor.execute("UPDATE alembic_version SET version_num = version_num")
                cursor.execute("COMMIT")
            except BaseException:
                cursor.execute("ROLLBACK")
                raise
        finally:
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()
    finally:
        raw.close()
