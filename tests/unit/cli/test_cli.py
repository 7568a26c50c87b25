"""The command line as a user meets it: exit codes, one-line errors, JSON for scripts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from runyard.cli.main import cli
from runyard.store.revision import SCHEMA_REVISION


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.chdir(tmp_path)
    for key in ("RUNYARD_DB", "RUNYARD_ARTIFACTS", "RUNYARD_SERVER", "RUNYARD_PROJECT", "RUNYARD_RAY", "RUNYARD_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    return {"RUNYARD_HOME": str(tmp_path / "home")}


def invoke(args: list[str], env: dict[str, str]):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, args, env=env, catch_exceptions=False)


def test_version_and_help() -> None:
    assert CliRunner().invoke(cli, ["--version"]).output.startswith("runyard 0.")
    out = CliRunner().invoke(cli, ["--help"]).output
    for command in ("doctor", "config", "migrate"):
        assert command in out


def test_doctor_creates_a_fresh_home_and_reports_it_works(env: dict[str, str], tmp_path: Path) -> None:
    result = invoke(["doctor", "--json"], env)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["ok"] is True
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["database"]["status"] == "ok" and f"schema {SCHEMA_REVISION}" in checks["database"]["detail"]
    assert checks["artifacts"]["status"] == "ok"
    assert {"postgresql", "ray", "gpu", "versions"} <= set(checks)
    assert (tmp_path / "home" / "runyard.db").is_file()
    human = invoke(["doctor"], env)
    assert human.exit_code == 0 and "the store works" in human.output


def test_doctor_fails_when_the_database_is_unreachable(env: dict[str, str]) -> None:
    env = {**env, "RUNYARD_DB": "postgresql+psycopg://postgres@127.0.0.1:1/none"}
    result = invoke(["doctor", "--json"], env)
    assert result.exit_code == 1
    checks = {c["name"]: c for c in json.loads(result.output)["checks"]}
    assert checks["database"]["status"] == "fail" and "cannot reach the database" in checks["database"]["detail"]


def test_config_says_where_each_value_came_from(env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "runyard.toml").write_text('project = "gan"\n')
    result = invoke(["config", "--json"], {**env, "RUNYARD_SERVER": "http://10.0.0.5:8765/"})
    doc = json.loads(result.output)
    assert doc["project"] == {"value": "gan", "source": str(tmp_path / "runyard.toml")}
    assert doc["server"] == {"value": "http://10.0.0.5:8765", "source": "env RUNYARD_SERVER"}
    assert doc["db"]["source"] == "default"
    assert "env RUNYARD_SERVER" in invoke(["config"], {**env, "RUNYARD_SERVER": "http://x:1"}).output


def test_a_bad_setting_is_one_line_and_exit_code_2(env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "runyard.toml").write_text("colour = 'blue'\n")
    result = CliRunner().invoke(cli, ["config"], env=env)
    assert result.exit_code == 2
    assert result.output.startswith("runyard: error: ") and "unknown key 'colour'" in result.output
    assert "Traceback" not in result.output and result.output.count("\n") == 1


@pytest.mark.postgres
def test_migrate_upgrades_a_postgres_database_explicitly(env: dict[str, str], pg_schema_url: str) -> None:
    check = invoke(["migrate", "--db", pg_schema_url, "--check"], env)
    assert check.exit_code == 1 and "run `runyard migrate`" in check.output
    doctor = invoke(["doctor", "--json"], {**env, "RUNYARD_DB": pg_schema_url})
    assert doctor.exit_code == 1 and "runyard migrate" in doctor.output
    result = invoke(["migrate", "--db", pg_schema_url], env)
    assert result.exit_code == 0 and f"upgraded from (empty) to {SCHEMA_REVISION}" in result.output
    assert "up to date" in invoke(["migrate", "--db", pg_schema_url], env).output
    assert invoke(["doctor"], {**env, "RUNYARD_DB": pg_schema_url}).exit_code == 0


def test_sync_with_nothing_pending_says_so(env: dict[str, str]) -> None:
    result = invoke(["sync"], env)
    assert result.exit_code == 0 and "nothing to sync" in result.output
    doc = json.loads(invoke(["sync", "--json"], env).output)
    assert doc["writers"] == [] and doc["retired"] == 0 and doc["quarantine"]["records"] == 0


def test_tokens_are_shown_once_listed_without_secrets_and_revoked(env: dict[str, str]) -> None:
    made = invoke(["token", "create", "--role", "reader", "--name", "ci", "--project", "gan", "--json"], env)
    assert made.exit_code == 0, made.output
    token = json.loads(made.output)
    assert token["token"].startswith("ry_") and token["role"] == "reader" and token["project"] == "gan"
    listed = invoke(["token", "list", "--json"], env)
    assert [t["name"] for t in json.loads(listed.output)] == ["ci"] and token["token"] not in listed.output
    table = invoke(["token", "list"], env)
    assert "ci" in table.output and token["token"] not in table.output
    assert invoke(["token", "revoke", "ci"], env).output.strip() == f"token {token['id']} (ci) revoked"
    assert json.loads(invoke(["token", "list", "--json"], env).output) == []
    assert invoke(["token", "revoke", "nope"], env).exit_code == 2


def test_config_never_prints_the_token(env: dict[str, str]) -> None:
    result = invoke(["config", "--json"], {**env, "RUNYARD_TOKEN": "ry_secret_value"})
    assert "ry_secret_value" not in result.output
    assert json.loads(result.output)["token"]["value"] == "(set, hidden)"


def test_a_server_that_cannot_be_reached_is_one_clear_error(env: dict[str, str]) -> None:
    result = CliRunner().invoke(cli, ["ls"], env={**env, "RUNYARD_SERVER": "http://127.0.0.1:9"})
    assert result.exit_code == 1
    assert "cannot reach the runyard server at http://127.0.0.1:9" in result.output


def test_show_says_which_agent_holds_a_launched_run(env: dict[str, str], tmp_path: Path) -> None:
    from runyard.config import resolve
    from runyard.store import claims_sql
    from runyard.store.home import open_store
    from runyard.store.newrun import NewRun
    from runyard.types import RunStatus

    opened = open_store(resolve(environ=env, cwd=tmp_path))
    try:
        number = opened.store.create_run(NewRun(project="p", status=RunStatus.QUEUED, command=["true"])).number
        assert "agent " not in invoke(["show", str(number)], env).output  # queued: nobody holds it
        claims_sql.claim(opened.store, number, [], "7f3a", "gpu-box-2")
        claims_sql.mark_submitted(opened.store, number, "7f3a")
    finally:
        opened.close()
    out = invoke(["show", str(number)], env).output
    assert "held by agent 7f3a on gpu-box-2 (claimed " in out and "; started " in out
    claim = json.loads(invoke(["show", str(number), "--json"], env).output)["claim"]
    assert claim["agent"] == "7f3a" and claim["host"] == "gpu-box-2" and claim["submitted_at"] is not None


def test_a_new_home_is_private_and_doctor_warns_about_one_others_can_read(env: dict[str, str], tmp_path: Path) -> None:
    import stat

    assert invoke(["doctor"], env).exit_code == 0
    home = Path(env["RUNYARD_HOME"])
    assert stat.S_IMODE(home.stat().st_mode) == 0o700  # other users of a shared machine cannot read runs
    home.chmod(0o755)  # a home made by an older runyard, or by hand
    result = invoke(["doctor", "--json"], env)
    assert result.exit_code == 0  # a warning, not a failure
    checks = {c["name"]: c for c in json.loads(result.output)["checks"]}
    assert checks["home"]["status"] == "warn" and "chmod 700" in checks["home"]["detail"]
    assert checks["database"]["status"] == "ok"  # and the other checks still ran


def _runs_of_each_kind(env: dict[str, str], tmp_path: Path) -> dict[str, int]:
    """A running script, a running JupyterLab, a finished notebook run: made in the store directly."""
    from runyard.config import resolve
    from runyard.store.api import RunPatch
    from runyard.store.home import open_store
    from runyard.store.newrun import NewRun
    from runyard.types import RunKind, RunStatus

    opened = open_store(resolve(environ=env, cwd=tmp_path))
    try:
        store = opened.store
        made = {kind.value: store.create_run(NewRun(project="p", name=f"a-{kind.value}", kind=kind,
                                                    status=RunStatus.RUNNING, command=["true"])).number
                for kind in (RunKind.SCRIPT, RunKind.JUPYTERLAB, RunKind.NOTEBOOK)}
        store.update_run(made["notebook"], RunPatch(status=RunStatus.FINISHED))
    finally:
        opened.close()
    return made


def _table_rows(output: str) -> tuple[list[str], dict[str, list[str]]]:
    """The header and each row's cells (split on two spaces or more), keyed by run number."""
    import re

    lines = output.splitlines()
    cells = [re.split(r" {2,}", line) for line in lines]
    starts = [m.start() for m in re.finditer(r"\S+", lines[0])]
    rows = {line[: starts[1]].strip(): [line[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
            for line in lines[1:]}
    return cells[0], rows


def test_ps_and_ls_show_the_kind_of_a_run_that_is_not_a_script(env: dict[str, str], tmp_path: Path) -> None:
    made = _runs_of_each_kind(env, tmp_path)
    header, rows = _table_rows(invoke(["ps"], env).output)
    assert header[:3] == ["RUN", "NAME", "KIND"]
    assert rows[str(made["jupyterlab"])][1:4] == ["a-jupyterlab", "jupyterlab", "running"]
    assert rows[str(made["script"])][1:4] == ["a-script", "", "running"]  # a script's cell stays empty
    assert str(made["notebook"]) not in rows  # finished: not in ps
    ps_json = json.loads(invoke(["ps", "--json"], env).output)
    assert {r["number"]: r["kind"] for r in ps_json} == {made["script"]: "script", made["jupyterlab"]: "jupyterlab"}

    header, rows = _table_rows(invoke(["ls"], env).output)
    assert header[:4] == ["RUN", "NAME", "KIND", "PROJECT"]
    assert {n: r[2] for n, r in rows.items()} == {str(made["script"]): "", str(made["jupyterlab"]): "jupyterlab",
                                                  str(made["notebook"]): "notebook"}
    ls_json = json.loads(invoke(["ls", "--json"], env).output)
    assert {r["number"]: r["kind"] for r in ls_json} == {v: k for k, v in made.items()}


def test_ls_and_ps_of_scripts_only_keep_their_narrow_table(env: dict[str, str], tmp_path: Path) -> None:
    from runyard.config import resolve
    from runyard.store.home import open_store
    from runyard.store.newrun import NewRun
    from runyard.types import RunStatus

    opened = open_store(resolve(environ=env, cwd=tmp_path))
    try:
        opened.store.create_run(NewRun(project="p", name="plain", status=RunStatus.RUNNING, command=["true"]))
    finally:
        opened.close()
    assert invoke(["ls"], env).output.split()[:7] == ["RUN", "NAME", "PROJECT", "STATUS", "LABELS", "CREATED",
                                                      "DURATION"]
    assert invoke(["ps"], env).output.split()[:6] == ["RUN", "NAME", "STATUS", "AGE", "GPUS", "LATEST"]


def test_ls_lists_runs_of_the_kinds_asked_for(env: dict[str, str], tmp_path: Path) -> None:
    made = _runs_of_each_kind(env, tmp_path)
    # The fast path (a table ordered by number) and the full one (--json, another sort) alike.
    _, rows = _table_rows(invoke(["ls", "--kind", "jupyterlab"], env).output)
    assert list(rows) == [str(made["jupyterlab"])]
    _, rows = _table_rows(invoke(["ls", "--kind", "notebook", "--kind", "script"], env).output)
    assert sorted(rows) == sorted([str(made["notebook"]), str(made["script"])])
    listed = json.loads(invoke(["ls", "--kind", "notebook", "--json"], env).output)
    assert [r["number"] for r in listed] == [made["notebook"]]
    listed = json.loads(invoke(["ls", "--kind", "script", "--sort", "name", "--json"], env).output)
    assert [r["number"] for r in listed] == [made["script"]]
    wrong = CliRunner().invoke(cli, ["ls", "--kind", "training"], env=env)
    assert wrong.exit_code == 2 and "jupyterlab" in wrong.output


