"""Opening the configured store: the one explicit step between settings and a working store.

* A fresh SQLite home is created on first use, and an older SQLite schema is migrated forward,
  under a file lock so that processes opening the same new home at once migrate it once.
* A PostgreSQL database is never migrated implicitly: an empty or older schema is an error that
  names the command to run (``runyard migrate``).
* A schema newer than this code is always an error.

Called at the CLI or SDK entry, never from a constructor.
"""

from __future__ import annotations

import fcntl
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import Engine, make_url

from runyard.config import Settings
from runyard.errors import SchemaError
from runyard.store.artifacts import ArtifactStore, artifacts_of
from runyard.store.engine import create_engine, dialect_of, masked
from runyard.store.migrate import require_known, schema_state, upgrade
from runyard.store.sql import SqlStore


@dataclass
class Opened:
    store: SqlStore
    artifacts: ArtifactStore
    #: (from, to) when this call migrated the schema, else None.
    migrated: tuple[str | None, str] | None = None

    def close(self) -> None:
        self.store.close()


def _sqlite_path(url: str) -> Path | None:
    database = make_url(url).database
    if not database or database == ":memory:":
        return None
    return Path(database)


def open_store(settings: Settings) -> Opened:
    """Open (creating or migrating if allowed) the store that ``settings`` describe."""
    url = settings.db
    backend = dialect_of(url)
    if backend == "sqlite":
        settings.home.mkdir(parents=True, exist_ok=True)
        path = _sqlite_path(url)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url)
    try:
        migrated = _ensure_schema(engine, backend, settings.home)
    except BaseException:
        engine.dispose()
        raise
    artifacts = artifacts_of(settings)
    artifacts.ensure()
    return Opened(SqlStore(engine), artifacts, migrated)


def _ensure_schema(engine: Engine, backend: str, home: Path) -> tuple[str | None, str] | None:
    state = schema_state(engine)
    require_known(state)
    if state.up_to_date:
        return None
    if backend != "sqlite":
        where = "empty" if state.current is None else f"at revision {state.current}"
        raise SchemaError(
            f"the database {masked(str(engine.url))} is {where}; this runyard needs revision {state.head}. "
            "Run `runyard migrate` to upgrade it"
        )
    with (home / ".migrate.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return upgrade(engine) if not schema_state(engine).up_to_date else None


