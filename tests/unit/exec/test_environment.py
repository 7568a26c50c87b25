"""What a launched run inherits from its submitter's shell, and that the help and README say exactly that."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from runyard.cli.main import cli
from runyard.exec.environment import INHERITED, LOCALE_PREFIX, command_environment, describe, inherited

README = (Path(__file__).parents[3] / "README.md").read_text()


def test_only_the_listed_variables_are_inherited() -> None:
    shell = {"PATH": "/venv/bin:/usr/bin", "VIRTUAL_ENV": "/venv", "LC_TIME": "de_DE.UTF-8", "HOME": "/home/a",
             "AWS_SECRET_ACCESS_KEY": "x", "RUNYARD_TOKEN": "ry_x", "PYTHONPATH": "/live/tree", "TERM": "xterm"}
    assert inherited(shell) == {"HOME": "/home/a", "LC_TIME": "de_DE.UTF-8", "PATH": "/venv/bin:/usr/bin",
                                "VIRTUAL_ENV": "/venv"}


def test_env_overrides_what_was_inherited_and_runyard_overrides_both() -> None:
    env = command_environment({"PATH": "/a", "HOME": "/h"}, {"PATH": "/b", "RUNYARD_RUN_ID": "mine"},
                              {"RUNYARD_RUN_ID": "01ABC"})
    assert env == {"PATH": "/b", "HOME": "/h", "RUNYARD_RUN_ID": "01ABC"}
    assert command_environment({}, {}, {})["PATH"]  # a shell's default when none was set


def test_the_active_environment_is_named_for_people() -> None:
    assert describe({"VIRTUAL_ENV": "/p/.venv"}) == "virtualenv /p/.venv"
    assert describe({"CONDA_PREFIX": "/opt/conda/envs/gan"}) == "conda env gan (/opt/conda/envs/gan)"
    assert describe({"PATH": "/usr/bin"}) == "no virtualenv or conda env active"


def test_run_help_and_the_readme_name_every_inherited_variable() -> None:
    help_text = CliRunner().invoke(cli, ["run", "--help"]).output
    for text, where in ((help_text, "runyard run --help"), (README, "README.md")):
        missing = [name for name in (*INHERITED, f"{LOCALE_PREFIX}*") if name not in text]
        assert missing == [], f"{where} does not say that a run inherits {missing}"


def test_the_launch_spec_carries_the_environment_and_an_older_one_has_none() -> None:
    from runyard.exec.spec import LaunchSpec

    spec = LaunchSpec(run_id="r", number=1, argv=["python"], shell=False, snapshot_id="s", home="/h", db="d",
                      artifacts="/a", environment={"PATH": "/venv/bin"})
    assert LaunchSpec.from_json(spec.to_json()).environment == {"PATH": "/venv/bin"}
    older = json.loads(spec.to_json())
    del older["environment"]  # written by a runyard that did not record it
    assert LaunchSpec.from_json(json.dumps(older)).environment is None
