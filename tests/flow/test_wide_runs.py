"""A real script logging 5,000 metric names per step (a gradient norm per layer) reaches the store,
through the local agent and through a live server, on both engines; `runyard ls` and `show` read it."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest
from tests.flow.test_execution import wait_for
from tests.unit.server.conftest import LiveServer, client_env, home_env
from tests.unit.server.conftest import live_server as live_server

from runyard.store.engine import create_engine
from runyard.store.migrate import upgrade

pytestmark = pytest.mark.timeout(120)

NAMES, STEPS = 5000, 10
SCRIPT = f"""
    import runyard
    run = runyard.init(project="wide", name="layers")
    for step in range({STEPS}):
        run.log({{f"layer{{i}}/grad_norm": step + i / 10_000 for i in range({NAMES})}}, step=step)
    run.finish()
"""


def run_script(tmp_path: Path, env: dict[str, str]) -> None:
    path = tmp_path / "train.py"
    path.write_text(textwrap.dedent(SCRIPT))
    done = subprocess.run([sys.executable, str(path)], env={**env, "RUNYARD_FINISH_TIMEOUT": "60"}, cwd=tmp_path,
                          capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "runyard.cli.main", *args], env=env, capture_output=True, text=True,
                          timeout=60)


def check_read_back(env: dict[str, str]) -> None:
    shown = cli(env, "show", "layers", "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["status"] == "finished"
    listed = cli(env, "ls", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [r["name"] for r in json.loads(listed.stdout)] == ["layers"]
    api = subprocess.run([sys.executable, "-c", "import json, runyard; r = runyard.Api().run('layers'); "
                          "h = r.history('layer4999/grad_norm'); "
                          "print(json.dumps([len(r.metrics()), h.step.tolist(), float(h.value[-1])]))"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert api.returncode == 0, api.stderr
    assert json.loads(api.stdout) == [NAMES, list(range(STEPS)), STEPS - 1 + 0.4999]

def test_a_script_logging_5000_names_per_step_reaches_the_local_store(tmp_path: Path, db_url: str) -> None:
    if db_url.startswith("postgresql"):  # a team database is migrated by its admin, never by a script
        engine = create_engine(db_url)
        upgrade(engine)
        engine.dispose()
    env = {**home_env(tmp_path / "home", db_url), "RUNYARD_STRICT": "1"}
    run_script(tmp_path, env)
    check_read_back(env)


def test_a_script_logging_5000_names_per_step_reaches_a_live_server(live_server: LiveServer, tmp_path: Path) -> None:
    env = {**client_env(tmp_path / "laptop", live_server.url), "RUNYARD_STRICT": "1"}
    run_script(tmp_path, env)

    def stored() -> bool:
        series = httpx.get(f"{live_server.url}/api/v1/runs/layers/metrics").json()
        return isinstance(series, list) and len(series) == NAMES and all(s["count"] == STEPS for s in series)

    wait_for(stored, timeout=30, what="the server to hold every series")
    check_read_back(env)


REFUSED = """
    import runyard
    run = runyard.init(project="odd", name="odd")
    run.log({"x": 1.0}, step=0)
    print("a line with a NUL \\x00 in it", flush=True)
    run.config["note"] = "a NUL \\x00 in a config value"
    run.log({"x": 2.0}, step=2**63 + 5)  # fits msgpack's uint64; beyond every database's integer
    run.log({"x": 3.0}, step=2)
    run.finish()
"""


def test_records_a_server_can_never_store_are_set_aside_by_the_shipper_not_retried_forever(
        live_server: LiveServer, tmp_path: Path) -> None:
    env = {**client_env(tmp_path / "laptop", live_server.url), "RUNYARD_FINISH_TIMEOUT": "60"}
    path = tmp_path / "odd.py"
    path.write_text(textwrap.dedent(REFUSED))
    done = subprocess.run([sys.executable, str(path)], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=90)
    assert done.returncode == 0 and "still being shipped" not in done.stderr, done.stderr
    synced = cli(env, "sync", "--json")
    assert synced.returncode == 0, synced.stderr  # nothing left that the server keeps refusing
    held = json.loads(synced.stdout)["quarantine"]["records"]
    assert held == 1  # the huge step only
    read = subprocess.run([sys.executable, "-c", "import json, runyard; r = runyard.Api().run('odd'); "
                           "print(json.dumps([r.status.value, r.history('x').step.tolist(), "
                           "[line.text for line in r.logs()], r.config]))"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert read.returncode == 0, read.stderr
    status, steps, lines, config = json.loads(read.stdout)
    assert status == "finished" and steps == [0, 2]
    # kept on both engines alike (PostgreSQL's JSON cannot hold a NUL; U+FFFD shows where it was)
    assert "a line with a NUL \ufffd in it" in lines
    assert config["note"] == "a NUL \ufffd in a config value"
