"""`runyard model` through a real server process: the same commands, the same answers as locally."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from tests.unit.server.conftest import LiveServer, client_env, home_env
from tests.unit.server.conftest import live_server as live_server

from runyard.config import resolve
from runyard.store.api import NewRun
from runyard.store.home import open_store
from runyard.types import RunStatus

pytestmark = pytest.mark.timeout(240)


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "runyard.cli.main", *args], env=env, capture_output=True,
                          text=True, timeout=120)


def trained_on_server(server: LiveServer, tmp_path: Path) -> int:
    opened = open_store(resolve(environ=home_env(server.home, server.db_url), cwd=tmp_path))
    try:
        number = opened.store.create_run(NewRun(project="p", name="best", status=RunStatus.FINISHED)).number
        for path, data in (("outputs/model/weights.bin", b"w" * 100), ("outputs/model/config.json", b"{}")):
            blob = opened.artifacts.put_bytes(data)
            opened.store.record_artifact(number, path, blob.size, blob.sha256, f"sha256:{blob.sha256}")
        return number
    finally:
        opened.close()


def test_model_commands_through_a_server(live_server: LiveServer, tmp_path: Path) -> None:
    run = trained_on_server(live_server, tmp_path)
    env = client_env(tmp_path / "laptop", live_server.url)
    first = cli(env, "model", "register", "best:outputs/model", "--name", "digits", "--alias", "staging", "--json")
    assert first.returncode == 0, first.stderr
    made = json.loads(first.stdout)
    assert (made["version"], made["run_number"], made["path"], made["file_count"], made["aliases"]) == (
        1, run, "outputs/model", 2, ["staging"])
    assert made["registered_by"] == "local user"  # the server's principal, not the laptop's user
    second = cli(env, "model", "register", f"{run}:outputs/model/weights.bin", "--name", "digits")
    assert second.returncode == 0 and "registered model:digits@2" in second.stdout, second.stderr
    assert cli(env, "model", "alias", "digits", "production", "1").returncode == 0
    assert cli(env, "model", "alias", "digits", "production", "2").returncode == 0  # moves it
    assert cli(env, "model", "unalias", "digits", "staging").returncode == 0
    server_env = home_env(live_server.home, live_server.db_url)
    for command in (["model", "ls", "--json"], ["model", "ls", "digits", "--json"], ["model", "ls", "digits"]):
        remote, local = cli(env, *command), cli(server_env, *command)
        assert remote.returncode == 0 and local.returncode == 0, remote.stderr + local.stderr
        assert remote.stdout == local.stdout, command
    listed = json.loads(cli(env, "model", "ls", "--json").stdout)
    assert [(m["name"], m["latest"]["version"], m["aliases"]) for m in listed] == [("digits", 2, {"production": 2})]
    resolved = subprocess.run(
        [sys.executable, "-c", "from runyard.api import Api; from runyard.models import resolve_model\n"
         "with Api() as api:\n"
         "    for ref in ('model:digits', 'model:digits@1', 'model:digits@production'):\n"
         "        v = resolve_model(api, ref); print(v.version, v.run_number, v.path)"],
        env=env, capture_output=True, text=True, timeout=60)
    assert resolved.stdout.splitlines() == [f"2 {run} outputs/model/weights.bin", f"1 {run} outputs/model",
                                            f"2 {run} outputs/model/weights.bin"], resolved.stderr
    for args, words in ((["register", "best:outputs/nothing", "--name", "digits"], "has no artifact outputs/nothing"),
                        (["alias", "digits", "latest", "1"], "reserved"),
                        (["alias", "digits", "production", "9"], "no version 9 (versions 1-2)"),
                        (["ls", "mnist"], "no model 'mnist' (models: digits")):
        refused = cli(env, "model", *args)
        assert refused.returncode == 2, (args, refused.stdout, refused.stderr)
        assert words in refused.stderr, (args, refused.stderr)
