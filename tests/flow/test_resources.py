"""What a launched run asks for is what it gets: CPU cores and memory are scheduled on, and a
machine profile's priority orders the queue. Real agent, real supervisors."""

from __future__ import annotations

import json
import socket
import sys
import textwrap
from pathlib import Path

import psutil
import pytest
from tests.flow.test_execution import api_of, cli, launch, status, wait_for, wait_status
from tests.flow.test_execution import env as env
from tests.flow.test_execution import project as project

pytestmark = pytest.mark.timeout(120)
TERMINAL = {"finished", "failed", "stopped", "timeout", "lost"}


def test_a_run_waits_for_cpu_cores_and_one_that_can_never_fit_fails_at_once(project: Path, env: dict[str, str],
                                                                          tmp_path: Path) -> None:
    cores = psutil.cpu_count(logical=True) or 1
    gate = tmp_path / "gate"
    wait = f"import os, time\nwhile not os.path.exists({str(gate)!r}): time.sleep(0.05)\n"
    (project / "wait.py").write_text(wait)
    try:
        big = launch(env, project, "--cpus", str(cores), "--", sys.executable, "wait.py")  # every core here
        wait_status(env, project, big, {"running"}, 30)
        small = launch(env, project, "--cpus", "1", "--", sys.executable, "-c", "pass")  # a slot is free, cores not
        never = launch(env, project, "--cpus", "4096", "--", sys.executable, "-c", "pass")
        assert wait_status(env, project, never, TERMINAL, 30) == "failed"
        api = api_of(env, project)
        try:
            assert f"asks for 4096 CPU cores; {socket.gethostname()} has {cores}" in (
                api.run(never).status_message or "")
        finally:
            api.close()
        assert status(env, project, small) == "queued"  # the same tick that failed `never` left it waiting
        gate.touch()
        assert wait_status(env, project, small, TERMINAL, 60) == "finished"
        api = api_of(env, project)
        try:
            assert api.run(small).started_at >= api.run(big).ended_at
        finally:
            api.close()
    finally:
        gate.touch()  # never leave the run waiting


def test_a_machine_profile_gives_a_run_its_priority_unless_the_flag_says_otherwise(project: Path,
                                                                                  env: dict[str, str]) -> None:
    (project / "runyard.toml").write_text(textwrap.dedent("""
        [machines.urgent]
        priority = 5
    """))
    number = launch(env, project, "--machine", "urgent", "--", sys.executable, "-c", "pass")
    shown = json.loads(cli(env, project, "show", str(number), "--json").stdout)
    assert shown["priority"] == 5
    flagged = launch(env, project, "--machine", "urgent", "--priority", "2", "--", sys.executable, "-c", "pass")
    assert json.loads(cli(env, project, "show", str(flagged), "--json").stdout)["priority"] == 2
    wait_for(lambda: all(status(env, project, n) in TERMINAL for n in (number, flagged)), 60, "both runs to end")
