"""Migrations on both engines: fresh, upgrade with data, and the refusals that protect a database."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from runyard.config import resolve
from runyard.errors import SchemaError
from runyard.store.engine import create_engine
from runyard.store.home import open_store
from runyard.store.migrate import MIGRATIONS_DIR, REVISIONS, schema_state, upgrade
from runyard.store.schema import SCHEMA_REVISION, metadata


def test_known_revisions_are_the_migration_scripts() -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    scripts = ScriptDirectory.from_config(cfg)
    history = [rev.revision for rev in reversed(list(scripts.walk_revisions()))]
    assert tuple(history) == REVISIONS
    assert scripts.get_current_head() == SCHEMA_REVISION == REVISIONS[-1]


def test_fresh_database_matches_the_schema_module(db_url: str) -> None:
    engine = create_engine(db_url)
    assert schema_state(engine).current is None
    assert upgrade(engine) == (None, SCHEMA_REVISION)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata)
    assert diff == []
    assert upgrade(engine) == (SCHEMA_REVISION, SCHEMA_REVISION)  # idempotent
    engine.dispose()


def test_upgrade_keeps_existing_data(db_url: str) -> None:
    engine = create_engine(db_url)
    upgrade(engine, "0001")
    with engine.begin() as conn:
        assert not sa.inspect(conn).has_table("alert_rules")
        conn.execute(sa.text("INSERT INTO projects (name, description, created_at) VALUES ('old', '', 1.0)"))
        conn.execute(sa.text(
            "INSERT INTO runs (id, project_id, status, created_at, resources, priority, notes, config, summary,"
            " environment) VALUES ('01J0000000000000000000000A', 1, 'finished', 2.0, '{}', 0, 'kept', '{}', '{}', '{}')"
        ))
    assert upgrade(engine) == ("0001", SCHEMA_REVISION)
    with engine.connect() as conn:
        assert sa.inspect(conn).has_table("alert_rules")
        assert conn.execute(sa.text("SELECT notes FROM runs")).scalar() == "kept"
    engine.dispose()


def _settings(tmp_path: Path, db: str):  # type: ignore[no-untyped-def]
    return resolve(environ={"RUNYARD_HOME": str(tmp_path / "home"), "RUNYARD_DB": db}, cwd=tmp_path)


def test_an_older_sqlite_home_is_migrated_when_opened(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'home' / 'runyard.db'}"
    (tmp_path / "home").mkdir()
    upgrade(create_engine(db), "0001")
    opened = open_store(_settings(tmp_path, db))
    assert opened.migrated == ("0001", SCHEMA_REVISION)
    opened.close()
    again = open_store(_settings(tmp_path, db))
    assert again.migrated is None
    again.close()


def test_a_postgres_database_is_never_migrated_implicitly(pg_schema_url: str, tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match=r"empty.*runyard migrate"):
        open_store(_settings(tmp_path, pg_schema_url))
    upgrade(create_engine(pg_schema_url), "0001")
    with pytest.raises(SchemaError, match=r"at revision 0001.*runyard migrate"):
        open_store(_settings(tmp_path, pg_schema_url))
    upgrade(create_engine(pg_schema_url))
    open_store(_settings(tmp_path, pg_schema_url)).close()


def test_a_schema_newer_than_the_code_is_refused(db_url: str, tmp_path: Path) -> None:
    engine = create_engine(db_url)
    upgrade(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0099'"))
    with pytest.raises(SchemaError, match="revision 0099, newer than this runyard"):
        open_store(_settings(tmp_path, db_url))
    with pytest.raises(SchemaError, match="newer"):
        upgrade(engine)
    engine.dispose()


def _open_home(home: str) -> str:
    opened = open_store(resolve(environ={"RUNYARD_HOME": home}, cwd=Path(home).parent))
    opened.close()
    return str(opened.migrated)


def test_processes_opening_a_new_home_at_once_migrate_it_once(tmp_path: Path) -> None:
    home = str(tmp_path / "home")
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        results = pool.map(_open_home, [home] * 4)
    assert sorted(results) == [str((None, SCHEMA_REVISION)), "None", "None", "None"]
