"""Schema versions: read the database's revision cheaply, and upgrade it with Alembic when asked.

Checking costs one query and no Alembic import; only an actual upgrade loads Alembic. Nothing here
runs by itself: callers decide (SQLite homes are upgraded on open, PostgreSQL by ``runyard migrate``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from runyard.errors import SchemaError, StoreUnavailable
from runyard.store.revision import REVISIONS, SCHEMA_REVISION

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


@dataclass(frozen=True)
class SchemaState:
    #: The database's revision; None for an empty database.
    current: str | None
    head: str = SCHEMA_REVISION

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head

    @property
    def too_new(self) -> bool:
        return self.current is not None and self.current not in REVISIONS


def read_revision(conn: Connection) -> str | None:
    if not sa.inspect(conn).has_table("alembic_version"):
        return None
    rows = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all()
    if len(rows) > 1:
        raise SchemaError(f"the database has several schema revisions ({', '.join(rows)}); it was not made by runyard")
    return rows[0] if rows else None


def schema_state(engine: Engine) -> SchemaState:
    try:
        with engine.connect() as conn:
            return SchemaState(read_revision(conn))
    except sa.exc.OperationalError as e:
        where = engine.url.render_as_string(hide_password=True)
        raise StoreUnavailable(f"cannot reach the database {where}: {str(e.orig).strip()}") from None


def require_known(state: SchemaState) -> None:
    if state.too_new:
        raise SchemaError(
            f"the database schema is at revision {state.current}, newer than this runyard understands "
            f"(it knows up to {state.head}); upgrade runyard (pip install -U runyard) to use it"
        )


def upgrade(engine: Engine, revision: str = "head") -> tuple[str | None, str]:
    """Upgrade the schema to ``revision``; returns (from, to). Safe to call when already current."""
    from alembic import command
    from alembic.config import Config

    state = schema_state(engine)
    require_known(state)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    with engine.connect() as conn:
        after = read_revision(conn)
    assert after is not None
    return state.current, after
