"""Nothing of a launched run outlives it: its processes die with its supervisor, and a stop reaches a
run still building its package environment."""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import time
from pathlib import Path

import pytest
from tests.flow.test_execution import TERMINAL, api_of, cli, launch, run_directory_of, status, wait_for, wait_status
from tests.flow.test_execution import env as env
from tests.flow.test_execution import project as project

pytestmark = pytest.mark.timeout(120)

GRANDCHILD = """\
import os, signal, subprocess, sys, time
signal.signal(signal.SIGHUP, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, '-c',
                          'import signal, time; signal.signal(signal.SIGHUP, signal.SIG_IGN); time.sleep(300)'],
                         start_new_session=False)
open('grandchild.pid', 'w').write(str(child.pid))
print('started', child.pid, flush=True)
time.sleep(300)
"""


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state == "Z"  # a zombie nobody reaped (a container's init may not) runs no more


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)


def test_killing_a_supervisor_kills_its_commands_grandchildren_and_the_run_is_lost(
        project: Path, env: dict[str, str]) -> None:
    (project / "train.py").write_text(GRANDCHILD)
    number = launch(env, project, "--", "python", "train.py")
    directory = run_directory_of(env, project, number)
    pid_file = directory / "work" / "grandchild.pid"
    wait_for(lambda: pid_file.exists() and pid_file.read_text().strip() != "", 30, "the grandchild to start")
    grandchild = int(pid_file.read_text())
    try:
        supervisor = int((directory / "supervisor.pid").read_text())
        os.kill(supervisor, signal.SIGKILL)
        wait_for(lambda: _gone(grandchild), 10, f"the grandchild {grandchild} to be killed")
        assert wait_status(env, project, number, TERMINAL, 10) == "lost"
    finally:
        _kill(grandchild)


def test_a_recycled_process_group_id_is_never_killed(tmp_path: Path) -> None:
    """A group recorded for a run but now someone else's (no process of it is the run's) is left alone."""
    import subprocess
    import sys

    from runyard.exec.groups import end_abandoned, record

    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], start_new_session=True,
                                cwd=tmp_path.parent)
    try:
        run_dir = tmp_path / "runs" / "01RUN"
        run_dir.mkdir(parents=True)
        record(run_dir, stranger.pid)
        assert end_abandoned(run_dir, "01RUN", wait=0.2) == []
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


def test_stop_ends_a_run_still_building_its_package_environment(project: Path, env: dict[str, str],
                                                               tmp_path: Path) -> None:
    # A slow installer: uv, when installed, builds --pip environments; this one never finishes.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    pids = tmp_path / "installer.pids"
    fake = bin_dir / "uv"
    fake.write_text(f"#!/bin/sh\necho $$ >> {pids}\nsleep 300 &\necho $! >> {pids}\nwait\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    env = {**env, "PATH": f"{bin_dir}{os.pathsep}{env['PATH']}"}
    number = launch(env, project, "--pip", "runyard-slow-requirement-zzz", "--", "python", "train.py")
    wait_for(lambda: pids.exists() and len(pids.read_text().split()) == 2, 60, "the installer to start")
    installer = [int(p) for p in pids.read_text().split()]
    try:
        started = time.monotonic()
        cli(env, project, "stop", str(number))
        assert wait_status(env, project, number, TERMINAL, 15) == "stopped"
        assert time.monotonic() - started < 15
        wait_for(lambda: all(_gone(p) for p in installer), 10, "the installer's processes to end")
        api = api_of(env, project)
        try:
            assert "preparing" in (api.run(number).status_message or "")
        finally:
            api.close()
    finally:
        for pid in installer:
            _kill(pid)
    assert status(env, project, number) == "stopped"
