"""Credentials in what runs record (git remote, command line, requirements, webhook URLs) never reach
readers: ``runyard show``, ``show --json``, ``logs``, ``ls --json`` and the HTTP API (a reader token
against a real server) show them as ``***``, while the launched command still gets the real values."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from tests.flow.test_execution import TERMINAL, cli, wait_status
from tests.unit.server.conftest import LiveServer, Served, home_env
from tests.unit.server.conftest import api as api
from tests.unit.server.conftest import live_server as live_server

from runyard import redact
from runyard.alerts.dispatch import NotifySettings, destination
from runyard.config import resolve
from runyard.store.api import NewRun
from runyard.types import RunStatus

__all__ = ["api", "live_server"]  # fixtures, imported to be used here

pytestmark = pytest.mark.timeout(120)

SECRETS = {
    "git": "ghp_GITREMOTESECRET",
    "sdk_flag": "SDKFLAGSECRET",
    "sdk_index": "SDKINDEXSECRET",
    "token": "CMDTOKENSECRET",
    "password": "CMDPASSWORDSECRET",
    "index": "CMDINDEXSECRET",
    "shell_env": "SHELLENVSECRET",
    "shell_key": "SHELLAPIKEYSECRET",
    "requirement": "REQUIREMENTSECRET",
}

# The launched script says what it received by a digest: the test compares it with the real values'.
LAUNCHED = """\
import hashlib, os, sys
received = " ".join(sys.argv[1:]) + "|" + os.environ.get("HF_TOKEN", "")
print("received", hashlib.sha256(received.encode()).hexdigest())
"""
SDK_RUN = """\
import runyard
run = runyard.init(project="sec", name="sdk")
run.log({"loss": 0.5})
run.finish()
"""


def _digest(text: str) -> str:
    import hashlib

    return "received " + hashlib.sha256(text.encode()).hexdigest()


def _git(project: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args], cwd=project,
                   check=True, capture_output=True)


def _assert_clean(text: str, where: str) -> None:
    leaked = [name for name, secret in SECRETS.items() if secret in text]
    assert not leaked, f"{where} shows the {', '.join(leaked)} secret(s):\n{text}"


def test_credentials_in_git_remote_command_and_requirements_reach_no_reader(
        live_server: LiveServer, tmp_path: Path) -> None:
    s = SECRETS
    project = tmp_path / "project"
    project.mkdir()
    (project / "launched.py").write_text(LAUNCHED)
    (project / "sdk_run.py").write_text(SDK_RUN)
    _git(project, "init", "-q")
    _git(project, "remote", "add", "origin", f"https://alice:{s['git']}@git.example.com/team/repo.git")
    _git(project, "add", ".")
    _git(project, "commit", "-q", "-m", "first")
    # This machine's user shares the team server's home and database (an agent beside the server).
    env = {**home_env(live_server.home, live_server.db_url), "RUNYARD_SLOTS": "2"}

    # A script run directly records its command line and git remote (the SDK's environment facts).
    sdk = subprocess.run([sys.executable, "sdk_run.py", "--token", s["sdk_flag"], "--index-url",
                          f"https://u:{s['sdk_index']}@pypi.example.com/simple"], cwd=project, env=env,
                         capture_output=True, text=True, timeout=60)
    assert sdk.returncode == 0, sdk.stderr
    # Launched runs: argv form, shell form, and one whose requirements name credentialed URLs (it asks
    # for more memory than any machine has, so it fails at once without installing anything).
    argv_run = json.loads(cli(env, project, "run", "--json", "--", "python", "launched.py", "--token", s["token"],
                              f"--password={s['password']}", "--index-url",
                              f"https://u:{s['index']}@pypi.example.com/simple").stdout)["number"]
    shell_run = json.loads(cli(env, project, "run", "--json",
                               f"HF_TOKEN={s['shell_env']} python launched.py --api-key {s['shell_key']}"
                               ).stdout)["number"]
    (project / "requirements.txt").write_text(
        f"team @ https://u:{s['requirement']}@pypi.example.com/team/team-1.0.whl\n"
        f"private @ https://{s['requirement']}@git.example.com/private-1.0.whl\n")
    req_run = json.loads(cli(env, project, "run", "--json", "--memory", "1000000T", "--requirements",
                             "requirements.txt", "--", "python", "launched.py").stdout)["number"]
    for number in (argv_run, shell_run, req_run):
        wait_status(env, project, number, TERMINAL)
    assert wait_status(env, project, argv_run, TERMINAL) == "finished"
    assert wait_status(env, project, shell_run, TERMINAL) == "finished"
    # The commands got the real values.
    logs = {n: cli(env, project, "logs", str(n)).stdout for n in (argv_run, shell_run, req_run)}
    real_argv = f"--token {s['token']} --password={s['password']} --index-url https://u:{s['index']}@pypi.example.com/simple|"
    assert _digest(real_argv) in logs[argv_run]
    assert _digest(f"--api-key {s['shell_key']}|{s['shell_env']}") in logs[shell_run]

    opened_settings = resolve(environ=env, cwd=project)
    from runyard.store.home import open_store
    from runyard.store.tokens import Tokens

    opened = open_store(opened_settings)
    try:
        sdk_number = opened.store.get_run("sdk").number
        stored = opened.store.get_run(sdk_number)
        # Masked when recorded: the store never holds them (the launch record keeps the real argv).
        _assert_clean(json.dumps([stored.command, stored.environment]), "the SDK run as stored")
        assert stored.environment["git_remote"] == "https://alice:***@git.example.com/team/repo.git"
        assert stored.command is not None and "--token" in stored.command and "***" in stored.command
        assert opened.store.get_run(argv_run).launch["argv"][3] == s["token"]  # what the supervisor runs
        _assert_clean(json.dumps(opened.store.get_run(argv_run).command), "the launched run's command column")
        _, reader = Tokens(opened.store).create("reader")
        _, writer = Tokens(opened.store).create("writer")
    finally:
        opened.close()

    shown = {n: cli(env, project, "show", str(n)).stdout for n in (sdk_number, argv_run, shell_run, req_run)}
    as_json = {n: cli(env, project, "show", str(n), "--json").stdout for n in (sdk_number, req_run)}
    for number, text in [*shown.items(), *logs.items()]:
        _assert_clean(text, f"runyard show or logs {number}")
    for number, text in as_json.items():
        _assert_clean(text, f"runyard show {number} --json")
    for number in shown:
        for who, token in (("reader", reader), ("writer", writer)):
            got = httpx.get(f"{live_server.url}/api/v1/runs/{number}",
                            headers={"authorization": f"Bearer {token}"}, timeout=10)
            assert got.status_code == 200, got.text
            _assert_clean(got.text, f"GET /api/v1/runs/{number} as a {who}")
    _assert_clean(cli(env, project, "ls", "--json").stdout, "runyard ls --json")
    _assert_clean(cli(env, project, "ls", "--columns", "launch,command,environment").stdout,
                  "runyard ls --columns launch,command,environment")
    listed = httpx.get(f"{live_server.url}/api/v1/runs", headers={"authorization": f"Bearer {reader}"}, timeout=10)
    _assert_clean(listed.text, "GET /api/v1/runs as a reader")

    # Still readable: what was there, with *** where the secret was.
    assert "--token ***" in shown[argv_run] and "--password=***" in shown[argv_run]
    assert "https://u:***@pypi.example.com/simple" in shown[argv_run]
    assert "HF_TOKEN=*** python launched.py --api-key ***" in shown[shell_run]
    requirements = json.loads(as_json[req_run])["launch"]["requirements"]
    assert "https://u:***@pypi.example.com/team/team-1.0.whl" in requirements
    assert "https://***@git.example.com/private-1.0.whl" in requirements
    assert json.loads(as_json[sdk_number])["environment"]["git_remote"] == \
        "https://alice:***@git.example.com/team/repo.git"
    assert "--token '***'" in logs[argv_run]  # the supervisor's "command:" line (quoted by shlex)


def test_a_webhook_url_and_an_smtp_password_in_a_launch_record_are_masked_for_writers_too(api: Served) -> None:
    from runyard.store.tokens import Tokens

    api.store.create_run(NewRun(project="p", name="hooked", status=RunStatus.QUEUED, launch={
        "argv": ["python", "t.py", "--token", "s3cr3t-argv"], "template": ["python", "t.py", "--token", "s3cr3t-argv"],
        "env": {"PIP_INDEX_URL": "https://u:s3cr3t-env@pypi.example.com/simple"},
        "notify": {"webhook": {"url": "https://hooks.example.com/T0/s3cr3t-hook"},
                   "email": {"to": "a@example.com", "password": "s3cr3t-smtp"}}}))
    _, writer = Tokens(api.store).create("writer")
    got = api.client.get("/api/v1/runs/hooked", headers={"authorization": f"Bearer {writer}"})
    assert got.status_code == 200 and "s3cr3t" not in got.text, got.text
    launch = got.json()["launch"]
    assert launch["argv"] == ["python", "t.py", "--token", "***"]
    assert launch["env"] == {"PIP_INDEX_URL": "https://u:***@pypi.example.com/simple"}
    assert launch["notify"]["webhook"]["url"] == "https://hooks.example.com/***"
    assert launch["notify"]["email"] == {"to": "a@example.com", "password": "***"}
    assert api.store.get_run("hooked").launch["argv"][3] == "s3cr3t-argv"  # kept for the supervisor


def test_runyard_alert_test_names_the_webhook_by_its_host_only() -> None:
    where = destination(NotifySettings(webhook_url="https://hooks.slack.com/services/T0/B0/s3cr3t"), "webhook")
    assert where == "https://hooks.slack.com/***"


def test_runyard_config_masks_a_password_in_the_server_url(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")}
    env.update({"RUNYARD_HOME": str(tmp_path / "home"), "RUNYARD_SERVER": "https://bob:s3cr3t@runyard.example.com"})
    out = subprocess.run([sys.executable, "-m", "runyard.cli.main", "config", "--json"], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "s3cr3t" not in out.stdout and "https://bob:***@runyard.example.com" in out.stdout


@pytest.mark.parametrize(("given", "shown"), [
    ("https://user:tok3n@github.com/a/b.git", "https://user:***@github.com/a/b.git"),
    ("https://ghp_abc123@github.com/a/b.git", "https://***@github.com/a/b.git"),
    ("ssh://git@github.com/a/b.git", "ssh://git@github.com/a/b.git"),
    ("git@github.com:a/b.git", "git@github.com:a/b.git"),
    ("python t.py --token abc --tokenizer bert --max-tokens 5",
     "python t.py --token *** --tokenizer bert --max-tokens 5"),
    ("python t.py --api-key=abc --secret 'two words' --password x",
     "python t.py --api-key=*** --secret *** --password ***"),
    ("HF_TOKEN=abc AWS_SECRET_ACCESS_KEY=def python t.py", "HF_TOKEN=*** AWS_SECRET_ACCESS_KEY=*** python t.py"),
    ("pip install --index-url https://u:p@host/simple x", "pip install --index-url https://u:***@host/simple x"),
    ("https://s3.example.com/b/k?X-Amz-Signature=abc&part=1&access_token=zz",
     "https://s3.example.com/b/k?X-Amz-Signature=***&part=1&access_token=***"),
    ("no secrets here: lr=0.1 --epochs 3", "no secrets here: lr=0.1 --epochs 3"),
])
def test_redact_text_masks_credentials_and_keeps_the_rest(given: str, shown: str) -> None:
    assert redact.text(given) == shown


def test_redact_argv_masks_the_word_after_a_secret_flag() -> None:
    assert redact.argv(["python", "t.py", "--token", "abc", "--tokenizer", "bert", "--hf_token", "x", "--lr", "1"]) \
        == ["python", "t.py", "--token", "***", "--tokenizer", "bert", "--hf_token", "***", "--lr", "1"]
