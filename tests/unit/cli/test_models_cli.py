"""`runyard model` as a user meets it: register, alias, unalias, ls; exit codes and JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from runyard.cli.main import cli
from runyard.config import resolve
from runyard.models import resolve_model
from runyard.store.api import NewRun
from runyard.store.home import open_store
from runyard.types import RunStatus


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.chdir(tmp_path)
    for key in ("RUNYARD_DB", "RUNYARD_ARTIFACTS", "RUNYARD_SERVER", "RUNYARD_PROJECT", "RUNYARD_RAY", "RUNYARD_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    return {"RUNYARD_HOME": str(tmp_path / "home"), "USER": "ada", "LOGNAME": "ada"}


def invoke(env: dict[str, str], *args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def trained(env: dict[str, str], tmp_path: Path) -> int:
    """A finished run named "best" that stored outputs/model/{weights.bin,config.json}."""
    opened = open_store(resolve(environ=env, cwd=tmp_path))
    try:
        number = opened.store.create_run(NewRun(project="p", name="best", status=RunStatus.FINISHED)).number
        for path, data in (("outputs/model/weights.bin", b"w" * 100), ("outputs/model/config.json", b"{}")):
            blob = opened.artifacts.put_bytes(data)
            opened.store.record_artifact(number, path, blob.size, blob.sha256, f"sha256:{blob.sha256}")
        return number
    finally:
        opened.close()


def test_register_alias_unalias_and_ls(env: dict[str, str], tmp_path: Path) -> None:
    run = trained(env, tmp_path)
    first = invoke(env, "model", "register", "best:outputs/model", "--name", "digits", "--alias", "staging",
                   "--description", "first")
    assert first.exit_code == 0, first.output
    assert f"registered model:digits@1: run {run} outputs/model, 2 file(s)" in first.output
    assert "aliases: staging" in first.output
    second = json.loads(invoke(env, "model", "register", f"{run}:outputs/model/weights.bin", "--name", "digits",
                               "--json").output)
    assert (second["version"], second["path"], second["file_count"], second["run_number"]) == (
        2, "outputs/model/weights.bin", 1, run)
    assert second["registered_by"] == "ada"
    moved = invoke(env, "model", "alias", "digits", "production", "1")
    assert moved.exit_code == 0 and "model:digits@production -> version 1" in moved.output
    assert json.loads(invoke(env, "model", "alias", "digits", "production", "2", "--json").output)["version"] == 2
    listed = json.loads(invoke(env, "model", "ls", "--json").output)
    assert [(m["name"], m["latest"]["version"], m["aliases"]) for m in listed] == [
        ("digits", 2, {"production": 2, "staging": 1})]
    table = invoke(env, "model", "ls").output.splitlines()
    assert table[0].split() == ["MODEL", "LATEST", "RUN", "PATH", "ALIASES", "REGISTERED"]
    assert table[1].split()[:5] == ["digits", "2", str(run), "outputs/model/weights.bin", "production=2,"]
    versions = invoke(env, "model", "ls", "digits").output.splitlines()
    assert [line.split()[0] for line in versions] == ["VERSION", "2", "1"]
    assert "production, latest" in versions[1] and "staging" in versions[2] and "ada" in versions[2]
    assert [v["version"] for v in json.loads(invoke(env, "model", "ls", "digits", "--json").output)] == [2, 1]
    removed = invoke(env, "model", "unalias", "digits", "staging")
    assert removed.exit_code == 0 and "it named version 1" in removed.output
    from runyard.api import Api

    with Api(resolve(environ=env, cwd=tmp_path)) as api:
        assert resolve_model(api, "model:digits@production").path == "outputs/model/weights.bin"
        assert resolve_model(api, "model:digits@1").aliases == ()


@pytest.mark.parametrize(("args", "words"), [
    (["register", "best:outputs/nothing", "--name", "digits"], "has no artifact outputs/nothing"),
    (["register", "nosuchrun:outputs", "--name", "digits"], "nosuchrun"),
    (["register", "best", "--name", "digits"], "expected RUN:PATH"),
    (["register", "best:outputs", "--name", "bad name"], "invalid model name"),
    (["register", "best:outputs", "--name", "digits", "--alias", "latest"], "reserved"),
    (["register", "best:outputs", "--name", "digits", "--alias", "42"], "only digits"),
    (["alias", "digits", "latest", "1"], "reserved"),
    (["alias", "nomodel", "production", "1"], "no model 'nomodel'"),
    (["unalias", "digits", "nosuch"], "no alias 'nosuch'"),
    (["ls", "nomodel"], "no model 'nomodel' (models: digits"),
])
def test_mistakes_exit_2_with_one_clear_line(env: dict[str, str], tmp_path: Path, args: list[str],
                                              words: str) -> None:
    trained(env, tmp_path)
    assert invoke(env, "model", "register", "best:outputs/model", "--name", "digits").exit_code == 0
    result = CliRunner().invoke(cli, ["model", *args], env=env)
    assert result.exit_code == 2, result.output
    assert words in result.output and "Traceback" not in result.output
    assert [v["version"] for v in json.loads(invoke(env, "model", "ls", "digits", "--json").output)] == [1]


def test_ls_without_models_says_how_to_register(env: dict[str, str]) -> None:
    result = invoke(env, "model", "ls")
    assert result.exit_code == 0 and "runyard model register RUN:PATH --name NAME" in result.output
    assert json.loads(invoke(env, "model", "ls", "--json").output) == []


def test_help_teaches_with_examples() -> None:
    out = CliRunner().invoke(cli, ["model", "--help"]).output
    for command in ("register", "alias", "unalias", "ls", "model:NAME@production"):
        assert command in out
    assert "runyard model register 12:outputs/model --name digits" in out


def test_rm_refuses_a_registered_run(env: dict[str, str], tmp_path: Path) -> None:
    run = trained(env, tmp_path)
    assert invoke(env, "model", "register", "best:outputs/model", "--name", "digits").exit_code == 0
    refused = CliRunner().invoke(cli, ["rm", "--yes", "best"], env=env)
    assert refused.exit_code == 2 and f"run {run} is model:digits@1" in refused.output, refused.output
    assert json.loads(invoke(env, "show", "best", "--json").output)["number"] == run
