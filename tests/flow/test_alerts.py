"""Alert rules on real runs: runyard.toml and `runyard alert add`, evaluated by the agent's ingester."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from tests.flow.test_execution import RUNYARD, api_of, cli, launch, wait_for, wait_status
from tests.flow.test_execution import env as env
from tests.flow.test_execution import project as project

pytestmark = pytest.mark.timeout(240)

NAN_THEN_SLEEP = """
import math, time, runyard
run = runyard.init()
for step in range(50):
    run.log({"loss": 1.0 / (step + 1)}, step=step)
run.log({"loss": math.nan}, step=50)
print("logged a NaN", flush=True)
time.sleep(120)  # an alert must end this
"""


def test_a_run_that_logs_nan_raises_its_alert_and_is_stopped(project: Path, env: dict[str, str]) -> None:
    (project / "train.py").write_text(textwrap.dedent(NAN_THEN_SLEEP))
    (project / "runyard.toml").write_text(textwrap.dedent("""
        [[alerts]]
        name = "loss-nan"
        when = "nan"
        metric = "loss"
        action = "stop"
    """))
    number = launch(env, project, "--", sys.executable, "train.py")
    assert wait_status(env, project, number, {"stopped", "failed", "finished", "lost", "timeout"}, 90) == "stopped"
    inbox = cli(env, project, "inbox", "--json").stdout.splitlines()
    events = [json.loads(line) for line in inbox]
    assert [(e["run"], e["kind"], e["step"]) for e in events] == [(number, "nan", 50)]
    assert "loss-nan: loss is nan at step 50" in events[0]["message"]
    assert cli(env, project, "inbox").stdout.strip() == "no unread alerts"  # printing marked them read
    api = api_of(env, project)
    try:
        assert "Stopped by an alert: loss-nan" in api.run(number).notes
    finally:
        api.close()


def test_a_rule_the_script_declares_stops_its_run(project: Path, env: dict[str, str]) -> None:
    (project / "train.py").write_text(textwrap.dedent("""
        import time, runyard
        run = runyard.init()
        run.alert("acc-collapse", "below", metric="acc", value=0.1, action="stop")
        for step in range(20):
            run.log({"acc": 0.5 + step / 100}, step=step)
        run.log({"acc": 0.05}, step=20)
        time.sleep(120)  # the rule must end this
    """))
    number = launch(env, project, "--", sys.executable, "train.py")
    assert wait_status(env, project, number, {"stopped", "failed", "finished", "lost", "timeout"}, 90) == "stopped"
    events = [json.loads(line) for line in cli(env, project, "inbox", "--json").stdout.splitlines()]
    assert [(e["run"], e["kind"], e["step"]) for e in events] == [(number, "below", 20)]
    assert f"run {number}" in cli(env, project, "alert", "ls").stdout  # the rule is listed with its run


def test_a_malformed_rule_stops_the_submission_with_its_line(project: Path, env: dict[str, str]) -> None:
    (project / "runyard.toml").write_text('[[alerts]]\nname = "x"\nwhen = "drop"\nmetric = "acc"\n')
    result = cli(env, project, "run", "--", "python", "train.py", check=False)
    assert result.returncode != 0
    assert f"{project / 'runyard.toml'}:1: rule 'x': when = 'drop' needs by" in result.stderr
    assert cli(env, project, "ls", "--json").stdout.strip() in ("[]", "")  # nothing was queued


def test_cli_rules_inbox_and_status_line(project: Path, env: dict[str, str]) -> None:
    added = json.loads(cli(env, project, "alert", "add", "--when", "failed", "--json").stdout)
    assert added["when"] == "failed" and added["project"] is None
    cli(env, project, "alert", "add", "--when", "drop", "--metric", "acc", "--by", "10%", "--project", "vision")
    listed = cli(env, project, "alert", "ls").stdout
    assert "failed" in listed and "by=0.1" in listed and "project vision" in listed
    refused = cli(env, project, "alert", "add", "--when", "plateau", "--metric", "loss", check=False)
    assert refused.returncode != 0 and "needs steps" in refused.stderr
    (project / "crash.py").write_text("import runyard\nrunyard.init()\nraise SystemExit(3)\n")
    number = launch(env, project, "--", sys.executable, "crash.py")
    assert wait_status(env, project, number, {"failed", "finished"}, 60) == "failed"
    wait_for(lambda: "1 alert" in cli(env, project, "status").stdout, 30, "the failure alert")
    line = cli(env, project, "status").stdout.strip()
    assert line == "0 running · 0 queued · 1 failed · 1 alert"
    assert cli(env, project, "alert", "rm", str(added["id"])).returncode == 0
    assert cli(env, project, "alert", "rm", str(added["id"]), check=False).returncode == 1
    follow = subprocess.run([*RUNYARD, "inbox", "--all", "--json"], env=env, cwd=project, capture_output=True,
                            text=True, timeout=60)
    assert [json.loads(x)["kind"] for x in follow.stdout.splitlines()] == ["failed"]


def allow_private(env: dict[str, str]) -> None:
    """The test webhook listens on loopback: only the home's config.toml may allow that."""
    home = Path(env["RUNYARD_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text("[notify]\nallow_private = true\n")


def test_a_launched_run_s_alert_reaches_the_webhook_its_project_file_names(project: Path,
                                                                           env: dict[str, str]) -> None:
    from tests.unit.alerts.test_dispatch import Hook

    hook = Hook()
    allow_private(env)
    try:
        (project / "train.py").write_text(textwrap.dedent(NAN_THEN_SLEEP).replace("time.sleep(120)", "pass"))
        (project / "runyard.toml").write_text(textwrap.dedent(f"""
            [[alerts]]
            name = "loss-nan"
            when = "nan"
            metric = "loss"
            notify = ["inbox", "webhook"]

            [notify.webhook]
            url = "{hook.url}"
        """))
        number = launch(env, project, "--", sys.executable, "train.py")
        assert wait_status(env, project, number, {"finished", "failed", "stopped"}, 90) == "finished"
        wait_for(lambda: len(hook.bodies) == 1, 30, "the webhook's message")
        sent = hook.bodies[0]["runyard"][0]
        assert (sent["run"], sent["kind"], sent["rule"]) == (number, "nan", "loss-nan")
        assert hook.bodies[0]["text"].startswith(f"runyard: run {number} (default): nan")
    finally:
        hook.close()


def test_alert_test_sends_on_each_configured_channel_and_says_which_failed(project: Path,
                                                                          env: dict[str, str]) -> None:
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Message
    from tests.unit.alerts.test_dispatch import Hook
    from tests.unit.server.conftest import free_port

    mails: list[object] = []

    class Keep(Message):
        def handle_message(self, message: object) -> None:
            mails.append(message)

    no_desktop = {**env, "PATH": str(project)}  # no notify-send: nothing is configured at all
    refused = cli(no_desktop, project, "alert", "test", check=False)
    assert refused.returncode == 1 and "no channel is configured" in refused.stderr
    hook, smtp = Hook(), Controller(Keep(), hostname="127.0.0.1", port=free_port())
    smtp.start()
    allow_private(env)
    try:
        (project / "runyard.toml").write_text(textwrap.dedent(f"""
            [notify.webhook]
            url = "{hook.url}"
            [notify.email]
            host = "127.0.0.1"
            port = {smtp.port}
            to = ["me@example.com"]
        """))
        sent = cli(env, project, "alert", "test", "--channel", "webhook", "--channel", "email")
        shown = hook.url.rsplit("/", 1)[0] + "/***"  # a webhook's path is its key: only the host is shown
        assert sent.stdout.splitlines() == [f"webhook: sent to {shown}", "email: sent to me@example.com"]
        assert len(hook.bodies) == 1 and hook.bodies[0]["text"].startswith("runyard: test message")
        assert len(mails) == 1
        (project / "runyard.toml").write_text(f'[notify.webhook]\nurl = "http://127.0.0.1:{free_port()}/gone"\n')
        failed = cli(env, project, "alert", "test", "--json", check=False)
        assert failed.returncode == 1
        result = json.loads(failed.stdout.splitlines()[0])
        assert result["channel"] == "webhook" and not result["ok"] and "ConnectError" in result["error"]
    finally:
        hook.close()
        smtp.stop()
