"""Other people's training code as it is (issue 13): the SDK inside a --pip environment however runyard
was installed, a command or script that does not exist, GPUs this machine lacks, and one package
environment for the same requirements however they were given. Real CLI, agent and supervisors."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from tests.flow.test_execution import cli, launch, log_of, status, wait_status
from tests.flow.test_execution import env as env
from tests.flow.test_execution import project as project

TERMINAL = {"finished", "failed", "stopped", "timeout", "lost"}
WORKTREE = Path(__file__).resolve().parents[2]
#: A small pure-Python package without dependencies, for real --pip environments.
PACKAGE = "termcolor"
PROBE = (
    "import runyard, termcolor\n"
    "print('runyard from', runyard.__file__)\n"
    "print('termcolor', termcolor.__name__)\n"
)


@pytest.fixture(scope="session")
def shared_envs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One envs directory for every home of the session: an environment (keyed by its requirements
    and its Python) is built by the first test that needs it and reused by the others."""
    return tmp_path_factory.mktemp("envs")


@pytest.fixture
def home_with_shared_envs(env: dict[str, str], shared_envs: Path) -> dict[str, str]:
    home = Path(env["RUNYARD_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    (home / "envs").symlink_to(shared_envs, target_is_directory=True)
    return env


@pytest.fixture(scope="session")
def wheel_install(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtual environment with runyard installed from a wheel of this worktree (not editable)."""
    root = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(root / "dist"),
                    str(WORKTREE)], check=True, capture_output=True, timeout=240)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    site = next(venv.glob("lib/python*/site-packages"))
    wheel = next((root / "dist").glob("runyard-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--target",
                    str(site), str(wheel)], check=True, capture_output=True, timeout=240)
    return venv


def editable() -> bool:
    from importlib.metadata import distribution

    direct = distribution("runyard").read_text("direct_url.json")
    return bool(direct and json.loads(direct).get("dir_info", {}).get("editable"))


def activated(env: dict[str, str], venv: Path) -> dict[str, str]:
    """A shell with ``venv`` active, so that `python` in a run is its Python."""
    return {**env, "VIRTUAL_ENV": str(venv), "PATH": f"{venv / 'bin'}{os.pathsep}{env['PATH']}"}


@pytest.mark.parametrize("install", ["editable", "wheel"])
def test_the_sdk_imports_in_a_pip_run_however_runyard_was_installed(
        install: str, project: Path, home_with_shared_envs: dict[str, str], request: pytest.FixtureRequest) -> None:
    env = home_with_shared_envs
    if install == "editable":
        if not editable():
            pytest.skip("runyard is not installed in editable mode here (`make install` installs it so)")
        venv, expected = Path(sys.prefix), WORKTREE / "src" / "runyard" / "__init__.py"
    else:
        venv = request.getfixturevalue("wheel_install")
        expected = next(venv.glob("lib/python*/site-packages")) / "runyard" / "__init__.py"
    shell = activated(env, venv)
    (project / "probe.py").write_text(PROBE)
    result = cli(shell, project, "run", "-f", "--pip", PACKAGE, "--", "python", "probe.py", check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"runyard from {expected}" in result.stdout.splitlines()
    assert "termcolor termcolor" in result.stdout.splitlines()


def test_requirements_naming_the_packages_of_an_earlier_pip_run_reuse_its_environment(
        project: Path, home_with_shared_envs: dict[str, str]) -> None:
    env = activated(home_with_shared_envs, Path(sys.prefix))  # this runyard's: its environment is shared
    (project / "probe.py").write_text("import termcolor\nprint('termcolor', termcolor.__name__)\n")
    # The same set, written otherwise: another case and separator, a comment, a blank line.
    (project / "requirements.txt").write_text("# what the probe needs\n\nTermColor   # colours\n")
    first = launch(env, project, "--pip", PACKAGE, "--", "python", "probe.py")
    assert wait_status(env, project, first, TERMINAL, 300) == "finished"
    second = launch(env, project, "--requirements", "requirements.txt", "--", "python", "probe.py")
    assert wait_status(env, project, second, TERMINAL, 120) == "finished"
    first_env, second_env = environment_of(env, project, first), environment_of(env, project, second)
    assert second_env[0] == "reusing" and second_env[1] == first_env[1], (first_env, second_env)
    assert ("stdout", "termcolor termcolor") in log_of(env, project, second)


def environment_of(env: dict[str, str], project: Path, number: int) -> tuple[str, str]:
    """("building" or "reusing", the environment's directory), as the run's log says it."""
    for stream, text in log_of(env, project, number):
        found = re.match(r"(building|reusing) (?:a|the) package environment (?:in )?(\S+)", text)
        if stream == "system" and found:
            return found.group(1), found.group(2)
    raise AssertionError(f"run {number}'s log names no package environment")


def test_a_command_that_does_not_exist_fails_as_a_shell_says_it(project: Path, env: dict[str, str]) -> None:
    env = {**env, "RUNYARD_SYSTEM_INTERVAL": "0.1"}  # the sampler starts on a command that is already gone
    for program in ("no_such_command_xyz", "./no_such_command_xyz"):
        result = cli(env, project, "run", "-f", "--json", "--", program, check=False)
        number = int(json.loads(result.stdout.splitlines()[0])["number"])
        assert result.returncode == 127, (program, result.stdout, result.stderr)
        assert f"command not found: {program}" in result.stderr and "setpriv" not in result.stderr
        shown = json.loads(cli(env, project, "show", str(number), "--json").stdout)
        assert (shown["status"], shown["exit_code"], shown["status_message"]) == (
            "failed", 127, f"command not found: {program}")
        assert "command not found: " + program in " ".join(text for _, text in log_of(env, project, number))
        assert "command not found: " + program in cli(env, project, "show", str(number)).stdout
        supervisor_log = next(Path(env["RUNYARD_HOME"], "runs").glob(f"{shown['id']}/supervisor.log")).read_text()
        assert "Traceback" not in supervisor_log and "setpriv" not in supervisor_log, supervisor_log


def test_a_python_script_the_snapshot_lacks_is_refused_at_submission(project: Path, env: dict[str, str]) -> None:
    for command in (["--", "python", "trian.py"], ["--", "python3", "-u", "trian.py", "--lr", "0.1"],
                    ["--", "python3.11", "-X", "dev", "./trian.py"], ["python trian.py --epochs 3"]):
        result = cli(env, project, "run", *command, check=False)
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        assert result.stderr.startswith("runyard: error: trian.py: no such file in the snapshot of "), result.stderr
        assert "Traceback" not in result.stderr
    assert "nothing queued" in cli(env, project, "ps").stdout
    # A module, code, or a script that exists: queued as before.
    accepted = [launch(env, project, "--", "python", "-m", "json.tool", "--help"),
                launch(env, project, "--", "python", "-c", "pass"),
                launch(env, project, "--", "python", "-u", "train.py")]
    for number in accepted:
        assert wait_status(env, project, number, TERMINAL) == "finished"
    # In a git repository the run starts at the root: a script named from a subdirectory is explained.
    subprocess.run(["git", "init", "-q", str(project)], check=True)
    (project / "models").mkdir()
    (project / "models" / "model_12.py").write_text("print('model 12')\n")
    result = cli(env, project / "models", "run", "--", "python", "model_12.py", check=False)
    assert result.returncode == 2
    assert "a run starts at the snapshot's root" in result.stderr and "models/model_12.py" in result.stderr


def test_a_script_named_by_an_absolute_path_outside_the_snapshot_is_queued_with_a_warning(
        project: Path, env: dict[str, str], tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere.py"
    elsewhere.write_text("print('from outside')\n")
    result = cli(env, project, "run", "--", "python", str(elsewhere))
    assert f"runyard: warning: {elsewhere} is outside the snapshot of " in result.stderr, result.stderr
    assert "as it is when the run starts" in result.stderr
    number = int(result.stdout.split()[1])
    assert wait_status(env, project, number, TERMINAL) == "finished"
    inside = cli(env, project, "run", "--json", "--", "python", str(project / "train.py"))
    assert "names the file in your project, not the run's copy" in inside.stderr, inside.stderr
    assert json.loads(inside.stdout)["warnings"][0].endswith("name it from the project's root (train.py) to run "
                                                             "the snapshot")
    relative = cli(env, project, "run", "--json", "--", "python", "train.py")
    assert "warning" not in relative.stderr and json.loads(relative.stdout)["warnings"] == []


def test_gpus_no_machine_has_are_refused_at_submission(project: Path, env: dict[str, str]) -> None:
    from runyard.config import resolve
    from runyard.exec.gpus import gpu_count
    from runyard.store.home import open_store

    here = gpu_count()
    wanted = str(here + 1)
    result = cli(env, project, "run", "--gpus", wanted, "--", "python", "train.py", check=False)
    assert result.returncode == 2, (result.stdout, result.stderr)
    has = f"has {here} GPU" if here else "has no GPUs"
    assert f"--gpus {wanted}: this machine" in result.stderr and has in result.stderr
    assert "--on ray" in result.stderr and "Traceback" not in result.stderr
    assert "nothing queued" in cli(env, project, "ps").stdout
    # Another machine serving this database says (through its agent's lease) that it has enough.
    opened = open_store(resolve(environ=env, cwd=project))
    try:
        opened.store.take_lease("agent:gpu-box", "gpu-box", 30, "gpu-box",
                                {"host": "gpu-box", "slots": 1, "gpus": here + 1, "cpus": 8, "memory": 1 << 34})
    finally:
        opened.close()
    number = launch(env, project, "--gpus", wanted, "--", "python", "train.py")
    assert status(env, project, number) == "queued"  # left to gpu-box's agent
    cli(env, project, "stop", str(number))


@pytest.mark.engines("sqlite")  # what is under test is the launch through a server, not the engine
def test_the_sdk_imports_in_a_pip_run_launched_through_a_server(
        project: Path, tmp_path: Path, db_url: str, shared_envs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.unit.server.conftest import LiveServer, client_env

    if not editable():
        pytest.skip("runyard is not installed in editable mode here (`make install` installs it so)")
    # The server was started from a shell with this (editable) installation active: its runs get that shell.
    monkeypatch.setenv("VIRTUAL_ENV", sys.prefix)
    monkeypatch.setenv("PATH", f"{Path(sys.prefix) / 'bin'}{os.pathsep}{os.environ['PATH']}")
    server = LiveServer(tmp_path / "server-home", db_url)
    server.home.mkdir(parents=True)
    (server.home / "envs").symlink_to(shared_envs, target_is_directory=True)
    server.start()
    try:
        laptop = client_env(tmp_path / "laptop", server.url)
        (project / "probe.py").write_text(PROBE)
        result = cli(laptop, project, "run", "-f", "--pip", PACKAGE, "--", "python", "probe.py", check=False)
    finally:
        server.kill()
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"runyard from {WORKTREE / 'src' / 'runyard' / '__init__.py'}" in result.stdout.splitlines()
    assert "termcolor termcolor" in result.stdout.splitlines()
