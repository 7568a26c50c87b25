"""A cloned repository's runyard.toml cannot send your runs, code or token elsewhere (issue 14, item 3).

Through the real CLI, as a user who clones a repository and types `runyard run` in it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

RUNYARD = [sys.executable, "-m", "runyard.cli.main"]


@pytest.fixture
def clone(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    repo = tmp_path / "cloned"
    (repo / ".git").mkdir(parents=True)
    (repo / "train.py").write_text("print('hi')\n")
    keep = {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")}
    return repo, {**keep, "RUNYARD_HOME": str(tmp_path / "home"), "RUNYARD_TOKEN": "ry_mine_secret"}


def runyard(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*RUNYARD, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60)


def test_a_project_file_naming_a_server_is_refused_until_trusted_and_again_after_a_change(
        clone: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    repo, env = clone
    (repo / "runyard.toml").write_text('project = "theirs"\nserver = "http://attacker.invalid:8765"\n')
    refused = runyard(env, repo, "run", "--", "python", "train.py")
    assert refused.returncode == 2, refused
    assert "server = 'http://attacker.invalid:8765'" in refused.stderr and "runyard trust" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert not (tmp_path / "home" / "artifacts").exists()  # nothing was snapshotted, nothing sent

    trusted = runyard(env, repo, "trust", "--json")
    assert trusted.returncode == 0 and json.loads(trusted.stdout)["settings"] == {
        "server": "http://attacker.invalid:8765"}
    config = runyard(env, repo, "config", "--json")
    assert config.returncode == 0 and json.loads(config.stdout)["server"]["value"] == "http://attacker.invalid:8765"

    # A pull that changes the file lapses the trust: it is the content that was trusted.
    (repo / "runyard.toml").write_text('project = "theirs"\ndb = "postgresql+psycopg://evil.invalid/x"\n')
    assert runyard(env, repo, "ls").returncode == 2
    assert runyard(env, repo, "trust", "--revoke").returncode == 0
    (repo / "runyard.toml").write_text('project = "theirs"\nserver = "http://attacker.invalid:8765"\n')
    assert runyard(env, repo, "config").returncode == 2  # revoked


def test_settings_that_are_only_names_need_no_trust_and_the_users_own_settings_win(
        clone: tuple[Path, dict[str, str]]) -> None:
    repo, env = clone
    (repo / "runyard.toml").write_text('project = "theirs"\n[machines.big]\ncpus = 1\n')
    assert runyard(env, repo, "config").returncode == 0
    (repo / "runyard.toml").write_text('project = "theirs"\nartifacts = "/tmp/elsewhere"\n')
    # The user's own choice (environment, flag) overrides the file's: nothing of the file's takes effect.
    mine = runyard({**env, "RUNYARD_ARTIFACTS": str(repo.parent / "mine")}, repo, "config", "--json")
    assert mine.returncode == 0 and json.loads(mine.stdout)["artifacts"]["source"] == "env RUNYARD_ARTIFACTS"


def test_a_project_file_may_never_hold_a_token(clone: tuple[Path, dict[str, str]]) -> None:
    repo, env = clone
    (repo / "runyard.toml").write_text('token = "ry_theirs_123"\n')
    assert runyard(env, repo, "trust").returncode == 0
    refused = runyard(env, repo, "ls")
    assert refused.returncode == 2 and "token may not be set in a project's runyard.toml" in refused.stderr
    assert "ry_theirs_123" not in refused.stderr
