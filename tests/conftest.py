"""Shared fixtures: a fresh store on each engine (SQLite file and the real PostgreSQL server).

PostgreSQL tests use the server at RUNYARD_TEST_PG (default: postgres@127.0.0.1:5432/test), each in a
schema of its own, dropped afterwards. They are part of `make test`: an unreachable server fails them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.s3server import CREDENTIALS, S3Server, seaweedfs

from runyard.store.engine import create_engine
from runyard.store.migrate import upgrade
from runyard.store.scratch import temporary_schema
from runyard.store.sql import SqlStore

PG_URL = os.environ.get("RUNYARD_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
ENGINES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture
def pg_schema_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a new, empty schema."""
    with temporary_schema(PG_URL, "runyard_test") as url:
        yield url


@pytest.fixture
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of the engine named by the test's ``engine`` parameter."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'runyard.db'}"
    return str(request.getfixturevalue("pg_schema_url"))


@pytest.fixture
def store(db_url: str) -> Iterator[SqlStore]:
    """A migrated store with tiny chunks, so a few points span many chunks and block levels."""
    engine = create_engine(db_url)
    upgrade(engine)
    s = SqlStore(engine, chunk_points=4)
    yield s
    s.close()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # Any test that uses db_url (directly or through store) runs once per engine.
    # ``@pytest.mark.engines("sqlite")`` narrows it (for slow tests whose subject is not the engine).
    if "db_url" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("engines")
        engines = ENGINES if marker is None else [e for e in ENGINES if getattr(e, "values", [e])[0] in marker.args]
        metafunc.parametrize("db_url", engines, indirect=True)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real S3 server (SeaweedFS on loopback) for the session, with test credentials in the environment."""
    with pytest.MonkeyPatch.context() as mp:
        for key, value in CREDENTIALS.items():
            mp.setenv(key, value)
        mp.delenv("AWS_PROFILE", raising=False)
        with seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as server:
            yield server


@pytest.fixture
def s3_location(s3_server: S3Server) -> str:
    """``s3://<bucket>/<a new prefix>/store``: an empty S3 artifact store of this test's own."""
    return s3_server.new_location()
