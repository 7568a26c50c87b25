"""Import hygiene (as mlflow tests it): `import runyard` and CLI start-up load no heavy library."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import runyard

HEAVY = ["sqlalchemy", "alembic", "numpy", "rich", "orjson", "psycopg", "click", "msgpack", "psutil", "boto3",
         "botocore"]


def loaded_after(code: str, env: dict[str, str] | None = None) -> set[str]:
    probe = f"{code}\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=env).stdout
    return set(json.loads(out.strip().splitlines()[-1]))


def test_import_runyard_is_light() -> None:
    modules = loaded_after("import runyard")
    assert not [m for m in HEAVY if m in modules]


def test_cli_help_loads_no_store_or_numerics() -> None:
    code = (
        "from runyard.cli.main import cli\n"
        "try:\n    cli(['--help'], prog_name='runyard')\nexcept SystemExit:\n    pass"
    )
    modules = loaded_after(code)
    assert not [m for m in HEAVY if m != "click" and m in modules]
    assert "runyard.cli.doctor" not in modules and "runyard.store" not in modules


def test_runyard_ls_lists_runs_without_loading_sqlalchemy(db_url: str, tmp_path: Path) -> None:
    """`runyard ls` is typed all day: on SQLite and on PostgreSQL it reads the rows through the
    database's own driver (importing SQLAlchemy and the store took four times as long as listing)."""
    from runyard.store.api import NewRun
    from runyard.store.engine import create_engine
    from runyard.store.migrate import upgrade
    from runyard.store.sql import SqlStore

    engine = create_engine(db_url)
    upgrade(engine)
    SqlStore(engine).create_run(NewRun(project="p", name="listed-fast"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")}
    env.update({"RUNYARD_HOME": str(tmp_path / "home"), "RUNYARD_DB": db_url})
    code = (
        "from runyard.cli.main import cli\n"
        "try:\n    cli(['ls'], prog_name='runyard')\nexcept SystemExit:\n    pass"
    )
    modules = loaded_after(code, env)
    assert "sqlalchemy" not in modules and "runyard.store.sql" not in modules
    # A spool without run directories (finished runs' are retired) needs no segment or ack reader.
    assert "runyard.spool.segment" not in modules and "runyard.spool.acks" not in modules


def test_public_surface_is_listed_and_sorted() -> None:
    assert runyard.__all__ == sorted(runyard.__all__)
    for name in runyard.__all__:
        assert getattr(runyard, name) is not None  # every lazy name resolves
    # Submodules become attributes once imported; TYPE_CHECKING is the typing idiom's constant.
    public = {n for n in dir(runyard) if not n.startswith("_") and not isinstance(getattr(runyard, n), ModuleType)}
    assert public - {"TYPE_CHECKING"} | {"__version__"} == set(runyard.__all__)
