"""Configuration precedence: default < home config.toml < project runyard.toml < RUNYARD_* < flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from runyard.config import SETTINGS, resolve
from runyard.errors import ConfigError
from runyard.trust import set_trusted


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path, Path]:
    home = tmp_path / "home"
    home.mkdir()
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    sub = repo / "models" / "gan"
    sub.mkdir(parents=True)
    return home, repo, sub


def test_defaults_live_in_the_home(layout: tuple[Path, Path, Path]) -> None:
    home, _, sub = layout
    s = resolve(environ={"RUNYARD_HOME": str(home)}, cwd=sub)
    assert s.home == home.resolve() and s.home_source == "env RUNYARD_HOME"
    assert s.db == f"sqlite:///{home.resolve() / 'runyard.db'}"
    assert s.artifacts == str(home.resolve() / "artifacts")
    assert s.server is None and s.project == "default"
    assert all(s.source(x.key) == "default" for x in SETTINGS)


def test_each_layer_overrides_the_one_below(layout: tuple[Path, Path, Path]) -> None:
    home, repo, sub = layout
    (home / "config.toml").write_text('db = "sqlite:////from/home.db"\nserver = "http://home:1"\nproject = "h"\n')
    (repo / "runyard.toml").write_text('server = "http://project:2"\nproject = "p"\nartifacts = "store"\n')
    env = {"RUNYARD_HOME": str(home), "RUNYARD_PROJECT": "e"}
    set_trusted(home, repo / "runyard.toml", True)  # it names a server: see test_trust
    s = resolve(environ=env, cwd=sub, overrides={"project": "flag"})
    assert (s.db, s.source("db")) == ("sqlite:////from/home.db", str(home.resolve() / "config.toml"))
    assert (s.server, s.source("server")) == ("http://project:2", str(repo / "runyard.toml"))
    # A relative path in a file is relative to that file's directory, not to the working directory.
    assert s.artifacts == str((repo / "store").resolve())
    assert (s.project, s.source("project")) == ("flag", "flag --project")
    assert resolve(environ=env, cwd=sub).project == "e"
    assert s.project_file == repo / "runyard.toml"


def test_an_empty_environment_value_unsets_an_optional_setting(layout: tuple[Path, Path, Path]) -> None:
    home, repo, sub = layout
    (repo / "runyard.toml").write_text('server = "http://project:2"\n')
    s = resolve(environ={"RUNYARD_HOME": str(home), "RUNYARD_SERVER": ""}, cwd=sub)
    assert s.server is None and s.source("server") == "env RUNYARD_SERVER"
    with pytest.raises(ConfigError, match="RUNYARD_DB: db is empty"):
        resolve(environ={"RUNYARD_HOME": str(home), "RUNYARD_DB": ""}, cwd=sub)


def test_a_bare_path_is_a_sqlite_database(layout: tuple[Path, Path, Path]) -> None:
    home, _, sub = layout
    s = resolve(environ={"RUNYARD_HOME": str(home), "RUNYARD_DB": "data/r.db"}, cwd=sub)
    assert s.db == f"sqlite:///{sub / 'data' / 'r.db'}"


def test_project_file_search_stops_at_the_repository_root(tmp_path: Path) -> None:
    (tmp_path / "runyard.toml").write_text('project = "outer"\n')
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    s = resolve(environ={"RUNYARD_HOME": str(tmp_path / "h")}, cwd=repo)
    assert s.project_file is None and s.project == "default"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("db = ", "not valid TOML"),
        ('colour = "blue"\n', "unknown key 'colour'; known keys are: alerts, artifacts, big_code_files, db"),
        ("db = true\n", "db must be a string or a number, not bool"),
        ("slots = [2]\n", "slots must be a string or a number, not list"),
        ('server = "ftp://x"\n', "invalid server 'ftp://x': expected an http:// or https:// URL"),
        ('project = "a/b"\n', "invalid project"),
        ('ray = "nohost"\n', "invalid ray"),
    ],
)
def test_bad_files_name_the_file_and_the_problem(layout: tuple[Path, Path, Path], content: str,
                                                 message: str) -> None:
    home, repo, sub = layout
    (repo / "runyard.toml").write_text(content)
    with pytest.raises(ConfigError, match=message) as info:
        resolve(environ={"RUNYARD_HOME": str(home)}, cwd=sub)
    assert str(repo / "runyard.toml") in str(info.value)


def test_feature_sections_are_not_settings(layout: tuple[Path, Path, Path]) -> None:
    home, repo, sub = layout
    (repo / "runyard.toml").write_text('project = "p"\n[[alerts]]\nname = "nan"\n[notify.webhook]\nurl = "x"\n')
    assert resolve(environ={"RUNYARD_HOME": str(home)}, cwd=sub).project == "p"


def test_unknown_override_is_refused(layout: tuple[Path, Path, Path]) -> None:
    home, _, sub = layout
    with pytest.raises(ConfigError, match="unknown setting 'colour'"):
        resolve(environ={"RUNYARD_HOME": str(home)}, cwd=sub, overrides={"colour": "x"})


def test_numbers_in_a_file_are_taken_as_toml_writes_them(layout: tuple[Path, Path, Path]) -> None:
    home, _, sub = layout
    (home / "config.toml").write_text("slots = 2\noutput_limit = 512\noutputs_interval = 2.5\n")
    s = resolve(environ={"RUNYARD_HOME": str(home)}, cwd=sub)
    assert (s.slots, s.output_limit, s.outputs_interval) == (2, 512 << 20, 2.5)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('[environments]\nplots = "termcolor"\n', "environments.plots must be a table"),
        ('[environments.plots]\npackages = ["termcolor"]\n', "unknown key 'packages'"),
        ('[environments.plots]\npip = "termcolor"\n', "pip must be a list of requirements"),
        ('[environments.plots]\npip = ["termcolor", ""]\n', "pip must be a list of requirements"),
    ],
)
def test_environment_profiles_are_checked_when_read(layout: tuple[Path, Path, Path], content: str,
                                                     message: str) -> None:
    home, _, sub = layout
    (home / "config.toml").write_text(content)
    with pytest.raises(ConfigError, match=message) as info:
        resolve(environ={"RUNYARD_HOME": str(home)}, cwd=sub)
    assert str(home / "config.toml") in str(info.value)
    (home / "config.toml").write_text('[environments.torch]\npip = ["torch", "torchvision>=0.17"]\n')
    assert resolve(environ={"RUNYARD_HOME": str(home)}, cwd=sub).environments == {
        "torch": ["torch", "torchvision>=0.17"]}
