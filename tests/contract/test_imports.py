"""Import hygiene (as mlflow tests it): `import runyard` and CLI start-up load no heavy library."""

from __future__ import annotations

import json
import subprocess
import sys
from types import ModuleType

import runyard

HEAVY = ["sqlalchemy", "alembic", "numpy", "rich", "orjson", "psycopg", "click", "msgpack", "psutil"]


def loaded_after(code: str) -> set[str]:
    probe = f"{code}\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
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


def test_public_surface_is_listed_and_sorted() -> None:
    assert runyard.__all__ == sorted(runyard.__all__)
    for name in runyard.__all__:
        assert getattr(runyard, name) is not None  # every lazy name resolves
    # Submodules become attributes once imported; TYPE_CHECKING is the typing idiom's constant.
    public = {n for n in dir(runyard) if not n.startswith("_") and not isinstance(getattr(runyard, n), ModuleType)}
    assert public - {"TYPE_CHECKING"} | {"__version__"} == set(runyard.__all__)
