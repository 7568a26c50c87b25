"""Issue 14, item 13: a user (or a writer token through a server) tried to slip an installer option
to pip through a requirement (``--pip 'torch >= -f.'``, a requirements line ``-f .`` or
``--index-url``). Each --pip value, each requirements-file line and a rerun's --pip are read with
``packaging.requirements.Requirement``; what it refuses is refused before anything is queued."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from runyard.errors import InvalidArgument
from runyard.exec import options

RUNYARD = [sys.executable, "-m", "runyard.cli.main"]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")}
    return {**keep, "RUNYARD_HOME": str(tmp_path / "home"), "RUNYARD_SYSTEM_INTERVAL": "0"}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    (root / "train.py").write_text("print('trained')\n")
    return root


def runyard(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*RUNYARD, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120)


def queued(env: dict[str, str], cwd: Path) -> list[int]:
    listed = runyard(env, cwd, "ls", "--json")
    assert listed.returncode == 0, listed.stderr
    return [r["number"] for r in json.loads(listed.stdout)]


OPTION_LIKE = ["torch >= -f.", "torch>=-f.", "-f .", "--index-url=http://evil.example/simple", "-e .",
               "torch --no-index", "./local-dir", "file:///etc/passwd", "torch>=2 --hash=sha256:00"]


@pytest.mark.parametrize("value", OPTION_LIKE)
def test_a_pip_value_that_is_no_requirement_never_reaches_pip_and_nothing_is_queued(
        env: dict[str, str], project: Path, value: str) -> None:
    result = runyard(env, project, "run", "--pip", value, "--", "python", "train.py")
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert f"--pip {value!r}" in result.stderr and "not a package requirement" in result.stderr
    assert "Traceback" not in result.stderr
    assert queued(env, project) == []


@pytest.mark.parametrize("line", ["-f .", "--index-url http://evil.example/simple", "--extra-index-url=http://e",
                                  "-r other.txt", "-c constraints.txt", "torch >= -f."])
def test_a_requirements_file_line_that_is_an_installer_option_is_refused_naming_the_line(
        env: dict[str, str], project: Path, line: str) -> None:
    (project / "requirements.txt").write_text(f"# pinned\nnumpy>=1.26\n{line}\n")
    result = runyard(env, project, "run", "--requirements", "requirements.txt", "--", "python", "train.py")
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "requirements.txt line 3" in result.stderr and repr(line) in result.stderr
    assert "Traceback" not in result.stderr
    assert queued(env, project) == []


def test_a_rerun_pip_value_that_is_no_requirement_is_refused_too(env: dict[str, str], project: Path) -> None:
    first = runyard(env, project, "run", "--json", "--", "python", "train.py")
    assert first.returncode == 0, first.stderr
    number = json.loads(first.stdout)["number"]
    result = runyard(env, project, "rerun", str(number), "--pip", "torch >= -f.")
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "--pip 'torch >= -f.'" in result.stderr and "Traceback" not in result.stderr
    assert queued(env, project) == [number]


@pytest.mark.parametrize("line", ["torch>=2.1,<3", "scikit-image", "Foo[b,a]==1 ; python_version > '3'",
                                  "bar @ https://example.org/bar-1.0.tar.gz", "torch==2.*  # a comment"])
def test_requirements_packaging_reads_are_kept_urls_included_in_a_local_file(line: str) -> None:
    assert options.requirement_lines(f"{line}\n\n# only a comment\n", "--requirements r.txt") == \
        [line.split("  #")[0]]


def test_through_a_server_a_url_requirement_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="with a URL is not accepted"):
        options.requirement_lines("bar @ https://evil.example/x.whl\n", "--requirements", urls=False)
    with pytest.raises(InvalidArgument, match="with a URL is not accepted"):
        options.pip_spec("bar @ https://evil.example/x.whl")
