"""Notebook runs: `runyard run notebook.ipynb -p ...` executed by a real Jupyter kernel through the
real CLI, agent and supervisor; parameters, a failing cell, a dead kernel, sys.exit(0), stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import nbformat
import pytest
from tests.flow.test_execution import (
    TERMINAL,
    api_of,
    cli,
    launch,
    log_of,
    run_directory_of,
    supervisor_pid,
    wait_for,
    wait_status,
)
from tests.flow.test_execution import env as env
from tests.flow.test_execution import project as project
from tests.unit.server.conftest import LiveServer, client_env
from tests.unit.server.conftest import live_server as live_server


@pytest.fixture
def nb_env(env: dict[str, str]) -> dict[str, str]:
    """The test home's environment, with this Python first on PATH: the `python` a notebook run's
    executor and kernel run with, as in a shell where runyard[notebook] is installed."""
    return {**env, "PATH": f"{Path(sys.executable).parent}:{env['PATH']}"}


def write_notebook(path: Path, *cells: str, parameters: str | None = None) -> None:
    """A notebook of code cells; ``parameters`` the source of a cell tagged 'parameters', first."""
    nb = nbformat.v4.new_notebook()
    if parameters is not None:
        cell = nbformat.v4.new_code_cell(parameters)
        cell.metadata["tags"] = ["parameters"]
        nb.cells.append(cell)
    nb.cells.append(nbformat.v4.new_markdown_cell("# An experiment"))
    nb.cells.extend(nbformat.v4.new_code_cell(source) for source in cells)
    nbformat.write(nb, path)


def executed(env: dict[str, str], cwd: Path, number: int, name: str, tmp: Path) -> Any:
    """The executed notebook kept as the run's output outputs/<name>."""
    target = tmp / f"run-{number}-{name}"
    cli(env, cwd, "cp", f"{number}:outputs/{name}", str(target))
    return nbformat.read(target, as_version=4)


def shown(env: dict[str, str], cwd: Path, number: int) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(cli(env, cwd, "show", str(number), "--json").stdout)
    return data


def test_parameters_are_injected_after_the_parameters_cell_and_the_executed_notebook_is_kept(
        project: Path, nb_env: dict[str, str], tmp_path: Path) -> None:
    write_notebook(
        project / "train.ipynb",
        "import json, runyard\n"
        "run = runyard.init()\n"
        "print(f'lr={lr!r} epochs={epochs!r} layers={layers!r} name={name!r} flag={flag!r}')",
        "for step in range(epochs):\n"
        "    run.log({'acc': 0.5 + step / 10}, step=step)\n"
        "    print(json.dumps({'step': step, 'loss': 1.0 / (step + 1)}))",
        parameters="lr = 0.01  # learning rate\nepochs: int = 1\nlayers = [8]\nname = 'base'\nflag = False")
    number = launch(nb_env, project, "train.ipynb", "-p", "lr=0.1", "-p", "epochs=3", "-p", "layers=[16, 32]",
                    "-p", "name=wide net", "--param", "flag=True")
    assert wait_status(nb_env, project, number, TERMINAL, 120) == "finished", log_of(nb_env, project, number)
    log = log_of(nb_env, project, number)
    text = [t for _, t in log]
    assert ("stdout", "lr=0.1 epochs=3 layers=[16, 32] name='wide net' flag=True") in log
    # Progress as it happened: each code cell's start and its end with its duration.
    assert any(t.startswith("[notebook] cell 1/4 started: lr = 0.01") for t in text), text
    assert any(t.startswith("[notebook] cell 2/4 (injected parameters) started") for t in text), text
    assert any(t.startswith("[notebook] cell 4/4 finished after ") and t.endswith(" s") for t in text), text

    record = shown(nb_env, project, number)
    assert record["kind"] == "notebook"
    assert record["command"] == ["python", "-m", "runyard.notebook.execute", "train.ipynb"]
    assert record["config"] == {"lr": 0.1, "epochs": 3, "layers": [16, 32], "name": "wide net", "flag": True}
    assert record["status_message"] == "executed 4 code cells"
    names = {s["key"] for s in record["metrics"]}
    assert {"acc", "loss"} <= names, names  # the SDK's and JSON lines', as for a script
    assert "  kind       notebook" in cli(nb_env, project, "show", str(number)).stdout

    nb = executed(nb_env, project, number, "train.ipynb", tmp_path)
    tags = [c.metadata.get("tags", []) for c in nb.cells]
    assert tags[0] == ["parameters"] and tags[1] == ["injected-parameters"]
    assert "lr = 0.1" in nb.cells[1].source and "layers = [16, 32]" in nb.cells[1].source
    assert nb.metadata.papermill.parameters == {"lr": 0.1, "epochs": 3, "layers": [16, 32], "name": "wide net",
                                                "flag": True}
    assert "".join(nb.cells[3].outputs[0].text).startswith("lr=0.1 epochs=3")
    assert all(c.metadata.papermill.status == "completed" for c in nb.cells)


def test_a_failing_cell_fails_the_run_naming_it_and_a_dead_kernel_is_told_apart(
        project: Path, nb_env: dict[str, str], tmp_path: Path) -> None:
    write_notebook(project / "broken.ipynb", "x = 1", "print('before', flush=True)\n1 / 0", "print('never')",
                   parameters="lr = 0.01")
    write_notebook(project / "oom.ipynb", "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)",
                   "print('never')")
    broken = launch(nb_env, project, "broken.ipynb")
    oom = launch(nb_env, project, "--", "oom.ipynb")  # after --, a notebook all the same
    assert wait_status(nb_env, project, broken, TERMINAL, 120) == "failed"
    assert wait_status(nb_env, project, oom, TERMINAL, 120) == "failed"
    api = api_of(nb_env, project)
    try:
        failed, died = api.run(broken), api.run(oom)
    finally:
        api.close()
    assert failed.exit_code == 1
    assert failed.status_message == "cell 3 of 4 (In [3]: print('before', flush=True)) raised " \
                                    "ZeroDivisionError: division by zero", failed.status_message
    assert ("stdout", "before") in log_of(nb_env, project, broken)
    nb = executed(nb_env, project, broken, "broken.ipynb", tmp_path)
    # papermill's banner at the top and its anchor before the failing cell; the cells after it not run.
    assert "An Exception was encountered" in nb.cells[0].source
    assert nb.cells[0].metadata.tags == ["papermill-error-cell-tag"]
    failing = [c for c in nb.cells if c.cell_type == "code" and c.metadata.papermill.get("exception")]
    assert [c.outputs[-1].ename for c in failing] == ["ZeroDivisionError"]
    assert not next(c for c in nb.cells if c.cell_type == "code" and "never" in c.source).outputs

    assert died.exit_code == 138
    assert died.status_message is not None and died.status_message.startswith(
        "the kernel died in cell 1 of 2, killed by SIGKILL (as the out-of-memory killer does"), died.status_message


def test_sys_exit_0_finishes_and_a_notebook_without_a_parameters_cell_gets_them_at_the_top(
        project: Path, nb_env: dict[str, str], tmp_path: Path) -> None:
    (project / "nbs").mkdir()
    (project / "nbs" / "data.txt").write_text("beside the notebook")
    write_notebook(project / "nbs" / "early.ipynb", "print('seed is', seed)\nprint(open('data.txt').read())",
                   "import sys\nsys.exit(0)", "print('never')")
    # Named from a subdirectory of a git work tree, the snapshot's root: the run names it from the
    # root, where it starts; the kernel starts beside the notebook.
    subprocess.run(["git", "init", "-q", str(project)], check=True)
    result = cli(nb_env, project / "nbs", "run", "--json", "early.ipynb", "-p", "seed=7")
    warning = "early.ipynb has no cell tagged 'parameters'"
    assert warning in result.stderr and warning in json.loads(result.stdout)["warnings"][0]
    number = int(json.loads(result.stdout)["number"])
    assert wait_status(nb_env, project, number, TERMINAL, 120) == "finished", log_of(nb_env, project, number)
    assert {("stdout", "seed is 7"), ("stdout", "beside the notebook")} <= set(log_of(nb_env, project, number))
    assert shown(nb_env, project, number)["command"] == ["python", "-m", "runyard.notebook.execute",
                                                         "nbs/early.ipynb"]
    api = api_of(nb_env, project)
    try:
        run = api.run(number)
    finally:
        api.close()
    assert run.exit_code == 0 and run.status_message == "finished by sys.exit(0) in cell 3 of 4"
    nb = executed(nb_env, project, number, "early.ipynb", tmp_path)
    assert nb.cells[0].metadata.tags == ["injected-parameters"] and nb.cells[0].source.strip().endswith("seed = 7")
    assert "An Exception was encountered" not in json.dumps(nb)

    again = int(cli(nb_env, project, "rerun", str(number), "-p", "seed=9").stdout.split()[1])
    assert wait_status(nb_env, project, again, TERMINAL, 120) == "finished", log_of(nb_env, project, again)
    assert ("stdout", "seed is 9") in log_of(nb_env, project, again)
    assert shown(nb_env, project, again)["kind"] == "notebook"


def test_stop_interrupts_the_kernel_and_keeps_the_notebook_as_far_as_it_went(
        project: Path, nb_env: dict[str, str], tmp_path: Path) -> None:
    write_notebook(project / "long.ipynb", "print('warmed up', flush=True)",
                   "import time\nprint('training', flush=True)\nfor _ in range(600):\n    time.sleep(0.1)",
                   "print('never')")
    number = launch(nb_env, project, "long.ipynb")
    abandoned = launch(nb_env, project, "long.ipynb")
    for n in (number, abandoned):
        wait_for(lambda n=n: ("stdout", "training") in log_of(nb_env, project, n), 120, "the long cell to start")
    cli(nb_env, project, "stop", str(number))
    # A killed supervisor: the run is lost and its kernel, in a session of its own, does not outlive it.
    directory = run_directory_of(nb_env, project, abandoned)
    kernel = int((directory / "groups").read_text().split()[-1])
    assert Path(f"/proc/{kernel}").exists()
    os.kill(supervisor_pid(nb_env, project, abandoned), signal.SIGKILL)
    assert wait_status(nb_env, project, number, TERMINAL, 60) == "stopped"
    assert wait_status(nb_env, project, abandoned, TERMINAL, 60) == "lost"
    wait_for(lambda: not Path(f"/proc/{kernel}").exists(), 20, f"the lost run's kernel {kernel} to end")
    api = api_of(nb_env, project)
    try:
        run = api.run(number)
    finally:
        api.close()
    assert run.status_message == "stopped on request"
    text = [t for _, t in log_of(nb_env, project, number)]
    assert "[notebook] stopped in cell 2 of 3 (In [2]: import time)" in text, text
    nb = executed(nb_env, project, number, "long.ipynb", tmp_path)
    code = {c.source.split("\n")[-1]: c for c in nb.cells if c.cell_type == "code"}
    assert code["    time.sleep(0.1)"].outputs[0].text == "training\n"
    assert code["    time.sleep(0.1)"].outputs[-1].ename == "KeyboardInterrupt"
    assert not code["print('never')"].outputs


def test_a_broken_notebook_or_an_unknown_parameter_exits_2_and_queues_nothing(
        project: Path, nb_env: dict[str, str]) -> None:
    write_notebook(project / "good.ipynb", "print(lr)", parameters="lr = 0.01\nepochs = 1")
    (project / "bad.ipynb").write_text("{not json")
    (project / "old.ipynb").write_text(json.dumps({"cells": "no", "nbformat": 4, "nbformat_minor": 5}))
    cases = {
        ("good.ipynb", "-p", "lr=0.1", "-p", "epoch=3"):
            "good.ipynb: no parameter epoch in its 'parameters' cell; its parameters: lr, epochs",
        ("bad.ipynb",): "bad.ipynb: not a valid Jupyter notebook",
        ("old.ipynb",): "old.ipynb: not a valid Jupyter notebook",
        ("missing.ipynb",): "no such notebook",
    }
    for args, said in cases.items():
        result = cli(nb_env, project, "run", *args, check=False)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert said in result.stderr and "Traceback" not in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert cli(nb_env, project, "ls").stdout.strip() == "no runs match"
    # A shell line that merely ends in .ipynb is a command, as before notebook runs existed.
    shell_line = cli(nb_env, project, "run", "--json", "cp good.ipynb copy.ipynb")
    assert json.loads(shell_line.stdout)["number"] == 1


def test_values_are_python_literals_else_text_and_the_parameters_are_the_names_the_cell_assigns() -> None:
    from runyard.notebook.params import declared, values_of

    assert values_of({"lr": "0.1", "n": "3", "on": "True", "off": "false", "none": "None", "layers": "[16, 32]",
                      "quoted": "'a b'", "text": "wide net", "eq": "a=b", "set": "{1, 2}"}) == {
        "lr": 0.1, "n": 3, "on": True, "off": False, "none": None, "layers": [16, 32], "quoted": "a b",
        "text": "wide net", "eq": "a=b", "set": "{1, 2}"}
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("%matplotlib inline\nlr: float = 0.1\na, (b, c) = 1, (2, 3)\n"
                                     "if False:\n    hidden = 1\nprint(lr)")
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_code_cell("before = 1"), cell]
    found = declared(nb)
    assert found.tagged and found.names == ("lr", "a", "b", "c")
    assert not declared(nbformat.v4.new_notebook()).tagged


@pytest.fixture
def python_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """This Python first on the PATH of what the test starts: a server's runs get its environment."""
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}:{Path('/usr/bin')}:{Path('/bin')}")


@pytest.mark.engines("sqlite")  # what is under test is the route, not the engine
def test_a_notebook_run_through_a_server(python_on_path: None, live_server: LiveServer, tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "nbs").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(project)], check=True)
    write_notebook(project / "nbs" / "remote.ipynb", "print('through the server', lr)", parameters="lr = 0.01")
    laptop = client_env(tmp_path / "laptop", live_server.url)
    refused = cli(laptop, project, "run", "nbs/remote.ipynb", "-p", "lrr=1", check=False)
    assert refused.returncode == 2 and "its parameters: lr" in refused.stderr
    number = launch(laptop, project / "nbs", "remote.ipynb", "-p", "lr=0.5")
    url = f"{live_server.url}/api/v1/runs/{number}"
    wait_for(lambda: httpx.get(url).json()["status"] in TERMINAL, 120, f"run {number} to end")
    run = httpx.get(url).json()
    texts = [line["text"] for line in httpx.get(f"{url}/logs").json()]
    assert run["status"] == "finished", texts
    assert run["kind"] == "notebook" and run["command"][-1] == "nbs/remote.ipynb" and run["config"] == {"lr": 0.5}
    assert "through the server 0.5" in texts
