"""Params in the command (``{lr}``, ``{params}``) reaching argparse scripts, and what a rerun changes."""

from __future__ import annotations

import fcntl
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.flow.test_execution import TERMINAL, api_of, cli, launch, log_of, wait_for, wait_status
from tests.flow.test_execution import env as env
from tests.flow.test_execution import project as project
from tests.unit.server.conftest import LiveServer, client_env
from tests.unit.server.conftest import live_server as live_server

from runyard.config import resolve
from runyard.exec.gpus import gpu_count

# A script as people write them: options through argparse, nothing of runyard's.
TRAIN = """\
import argparse, json
parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float, required=True)
parser.add_argument("--epochs", type=int, default=1)
parser.add_argument("--name", default="")
parser.add_argument("--tag", default="")
print("args: " + json.dumps(vars(parser.parse_args()), sort_keys=True))
"""


def seen_args(env: dict[str, str], cwd: Path, number: int) -> dict[str, Any]:
    assert wait_status(env, cwd, number, TERMINAL) == "finished", log_of(env, cwd, number)
    [line] = [text for stream, text in log_of(env, cwd, number) if stream == "stdout" and text.startswith("args: ")]
    parsed: dict[str, Any] = json.loads(line.removeprefix("args: "))
    return parsed


def shown(env: dict[str, str], cwd: Path, number: int) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(cli(env, cwd, "show", str(number), "--json").stdout)
    return data


def rerun(env: dict[str, str], cwd: Path, *args: str) -> int:
    out = cli(env, cwd, "rerun", *args).stdout
    return int(out.split()[1])


def test_a_param_named_in_the_command_reaches_argparse_and_a_rerun_substitutes_it_again(
        project: Path, env: dict[str, str]) -> None:
    (project / "train.py").write_text(TRAIN)
    first = launch(env, project, "--param", "lr=0.1", "--param", "epochs=3", "--", "python", "train.py",
                   "--lr", "{lr}", "--epochs={epochs}")
    assert seen_args(env, project, first)["lr"] == 0.1
    assert "  command    python train.py --lr 0.1 --epochs=3" in cli(env, project, "show", str(first)).stdout
    record = shown(env, project, first)
    assert record["command"] == record["launch"]["argv"] == ["python", "train.py", "--lr", "0.1", "--epochs=3"]
    assert record["launch"]["template"] == ["python", "train.py", "--lr", "{lr}", "--epochs={epochs}"]

    second = rerun(env, project, str(first), "--param", "lr=0.05")
    assert seen_args(env, project, second) == {"lr": 0.05, "epochs": 3, "name": "", "tag": ""}
    child = shown(env, project, second)
    assert child["command"] == ["python", "train.py", "--lr", "0.05", "--epochs=3"] and child["parent"] == first
    assert child["config"] == {"lr": 0.05, "epochs": 3}
    assert child["launch"]["template"] == record["launch"]["template"]

    # {params}: one --KEY=VALUE entry per param, sorted by KEY; {{ and }} are literal braces.
    third = launch(env, project, "--param", "lr=0.2", "--param", "epochs=4", "--", "python", "train.py",
                   "{params}", "--tag", "{{lr}}")
    assert seen_args(env, project, third) == {"lr": 0.2, "epochs": 4, "name": "", "tag": "{lr}"}
    assert shown(env, project, third)["command"] == ["python", "train.py", "--epochs=4", "--lr=0.2", "--tag",
                                                     "{lr}"]
    fourth = rerun(env, project, str(third), "--param", "epochs=9")
    assert seen_args(env, project, fourth) == {"lr": 0.2, "epochs": 9, "name": "", "tag": "{lr}"}


def test_a_shell_line_gets_each_value_as_one_shell_word(project: Path, env: dict[str, str]) -> None:
    (project / "train.py").write_text(TRAIN)
    name = "my run; touch marker $(touch marker2)"
    number = launch(env, project, "--param", f"name={name}", "--param", "lr=0.3",
                    "python train.py --lr {lr} --name {name} | cat && echo piped ${HOME:+home}")
    assert seen_args(env, project, number)["name"] == name
    assert ("stdout", "piped home") in log_of(env, project, number)  # the shell's own braces stay as written
    assert not list(project.rglob("marker*")) and not list(resolve(environ=env, cwd=project).home.rglob("marker*"))
    again = rerun(env, project, str(number), "--param", "name=it's")
    assert seen_args(env, project, again)["name"] == "it's"


def test_mistakes_in_params_exit_2_say_what_is_known_and_queue_nothing(project: Path, env: dict[str, str]) -> None:
    (project / "train.py").write_text(TRAIN)
    cases = {
        ("run", "--param", "lr=0.1", "--param", "epochs=2", "--", "python", "train.py", "--lr", "{lrr}"):
            "runyard: error: the command refers to {lrr}, which is no param; params given: epochs, lr "
            "(write {{ and }} for a literal { and })\n",
        ("run", "--", "python", "train.py", "--lr", "{lr}"):
            "runyard: error: the command refers to {lr}, which is no param; params given: none (no --param "
            "given) (write {{ and }} for a literal { and })\n",
        ("run", "--param", "lr=0.1", "--param", "lr=0.2", "--", "python", "train.py"):
            "runyard: error: --param lr is given twice (lr=0.1, lr=0.2); give each key once. Keys given: lr\n",
        ("run", "--param", "lr=0.1", "--", "python", "train.py", "--x={params}"):
            "runyard: error: '--x={params}': {params} stands for several argv entries, so it must be an entry of "
            "its own (e.g. -- python train.py {params}); use {KEY} inside an entry\n",
    }
    for args, message in cases.items():
        result = cli(env, project, *args, check=False)
        assert (result.returncode, result.stderr) == (2, message), args
    assert cli(env, project, "ls").stdout.strip() == "no runs match"

    first = launch(env, project, "--param", "lr=0.1", "--param", "epochs=2", "--", "python", "train.py",
                   "--lr", "{lr}")
    for args, message in {
        ("--param", "momentum=0.9"): f"runyard: error: --param momentum: run {first} has no param 'momentum'; its "
                                     "params: epochs, lr (a rerun changes params, it adds none)\n",
        ("--param", "lr=0.2", "--param", "lr=0.3"): "runyard: error: --param lr is given twice (lr=0.2, lr=0.3); "
                                                    "give each key once. Keys given: lr\n",
    }.items():
        result = cli(env, project, "rerun", str(first), *args, check=False)
        assert (result.returncode, result.stderr) == (2, message), args
    assert [r["number"] for r in json.loads(cli(env, project, "ls", "--json").stdout)] == [first]


def test_a_rerun_overrides_env_and_timeout(project: Path, env: dict[str, str]) -> None:
    (project / "probe.py").write_text("import os, sys, time\nprint('env', os.environ['COLOUR'], os.environ['SIZE'])\n"
                                      "time.sleep(float(sys.argv[1]))\nprint('slept')\n")
    first = launch(env, project, "--param", "secs=0", "--env", "COLOUR=red", "--env", "SIZE=big", "--",
                   "python", "probe.py", "{secs}")
    assert wait_status(env, project, first, TERMINAL) == "finished"
    second = rerun(env, project, str(first), "--param", "secs=30", "--env", "COLOUR=blue", "--timeout", "1s")
    assert wait_status(env, project, second, TERMINAL) == "timeout"
    assert ("stdout", "env blue big") in log_of(env, project, second)
    assert ("stdout", "slept") not in log_of(env, project, second)
    assert shown(env, project, second)["launch"]["env"] == {"COLOUR": "blue", "SIZE": "big"}


@contextmanager
def no_agent(env: dict[str, str], cwd: Path) -> Iterator[None]:
    """Hold the home's agent lock: runs stay queued, so their records can be read without running them."""
    from runyard.sdk.agent_launch import agent_lock_path

    path = agent_lock_path(resolve(environ=env, cwd=cwd))
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield


def test_a_rerun_overrides_pip_mounts_and_gpus_checked_as_run_checks_them(project: Path, env: dict[str, str]) -> None:
    for name in ("data", "other"):
        (project / name).mkdir()
    with no_agent(env, project):
        first = launch(env, project, "--pip", "termcolor", "--pip", "tqdm", "--mount", "data:data", "--", "true")
        second = rerun(env, project, str(first), "--pip", "Termcolor==2.4.0", "--mount", "other:data",
                       "--mount", "data:extra", "--gpus", "0")
        more_gpus_than_any_machine = str(gpu_count() + 1)
        for option, value in (("--timeout", "soon"), ("--pip", "-e ."), ("--mount", "missing:data"),
                              ("--gpus", "-1"), ("--gpus", more_gpus_than_any_machine), ("--env", "1BAD=x")):
            by_run = cli(env, project, "run", option, value, "--", "true", check=False)
            by_rerun = cli(env, project, "rerun", str(first), option, value, check=False)
            assert by_rerun.returncode == by_run.returncode == 2, (option, value, by_rerun.stderr)
            assert by_rerun.stderr == by_run.stderr, (option, value)
        api = api_of(env, project)
        try:
            parent, child = api.run(first), api.run(second)
            assert api.runs(limit=10) and len(api.runs()) == 2  # nothing else was queued
        finally:
            api.close()
    assert child.launch["pip"] == ["tqdm", "Termcolor==2.4.0"]  # a package replaces the same package
    mounts = {m["target"]: Path(m["source"]).name for m in child.launch["mounts"]}
    assert mounts == {"data": "other", "extra": "data"}  # a mount replaces the one at the same target
    assert child.resources["gpus"] == 0 == parent.resources["gpus"]
    assert child.launch["timeout"] is None and child.launch["env"] == {}


@pytest.mark.engines("sqlite")  # what is under test is the route, not the engine
def test_a_rerun_through_a_server_substitutes_params_and_overrides_there(live_server: LiveServer,
                                                                          tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "train.py").write_text(TRAIN + "import os\nprint('colour', os.environ.get('COLOUR'))\n")
    laptop = client_env(tmp_path / "laptop", live_server.url)
    first = launch(laptop, project, "--param", "lr=0.1", "--", "python", "train.py", "--lr", "{lr}")
    second = rerun(laptop, project, str(first), "--param", "lr=0.05", "--env", "COLOUR=blue")

    url = f"{live_server.url}/api/v1/runs/{second}"
    wait_for(lambda: httpx.get(url).json()["status"] in TERMINAL, 60, f"run {second} to end")
    run = httpx.get(url).json()
    assert run["status"] == "finished" and run["command"] == ["python", "train.py", "--lr", "0.05"]
    texts = [line["text"] for line in httpx.get(f"{url}/logs").json()]
    assert "colour blue" in texts and any(t.startswith("args: ") and '"lr": 0.05' in t for t in texts), texts
    unknown = cli(laptop, project, "rerun", str(first), "--param", "momentum=0.9", check=False)
    assert unknown.returncode == 2 and "its params: lr" in unknown.stderr
    local_path = cli(laptop, project, "rerun", str(first), "--mount", "/etc:etc", check=False)
    assert local_path.returncode == 2 and "RUN:PATH" in local_path.stderr
    typo = cli(laptop, project, "run", "--param", "lr=0.1", "--", "python", "train.py", "--lr", "{lrr}", check=False)
    assert typo.returncode == 2 and "the command refers to {lrr}, which is no param; params given: lr" in typo.stderr


def test_a_rerun_pip_replaces_the_same_package_in_the_parents_requirements_file(
        project: Path, env: dict[str, str]) -> None:
    (project / "requirements.txt").write_text("termcolor==3.3.0  # pinned\ntqdm\n")
    with no_agent(env, project):
        first = launch(env, project, "--requirements", "requirements.txt", "--", "true")
        second = rerun(env, project, str(first), "--pip", "TermColor==3.2.0")
        api = api_of(env, project)
        try:
            child = api.run(second)
        finally:
            api.close()
    # One termcolor, the one asked for: both would make an environment pip cannot resolve.
    assert child.launch["pip"] == ["TermColor==3.2.0"]
    assert "termcolor" not in child.launch["requirements"].lower() and "tqdm" in child.launch["requirements"]
