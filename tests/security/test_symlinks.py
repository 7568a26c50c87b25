"""Symlinks never lead runyard out of where it writes or reads: `runyard cp` from a server writes
nothing through a symlink in its destination, and a launched run's outputs never follow one out of
its working directory."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from tests.flow.test_execution import TERMINAL, api_of, launch, log_of, wait_status
from tests.flow.test_execution import env as env
from tests.flow.test_execution import project as project
from tests.unit.server.conftest import LiveServer, client_env
from tests.unit.server.conftest import live_server as live_server

pytestmark = pytest.mark.timeout(120)


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_cp_from_a_server_refuses_to_write_through_a_symlink_in_the_destination(live_server: LiveServer,
                                                                               tmp_path: Path) -> None:
    env = client_env(tmp_path / "laptop", live_server.url)
    (tmp_path / "model.bin").write_bytes(b"weights")
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent("""
        import runyard
        run = runyard.init(project="p", name="r1")
        run.log_artifact("model.bin", name="outputs/ckpt/model.bin")
        run.finish()
    """))
    done = subprocess.run([sys.executable, str(script)], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("mine")
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "ckpt").symlink_to(outside, target_is_directory=True)  # planted in a shared destination
    copied = subprocess.run([sys.executable, "-m", "runyard.cli.main", "cp", "r1:outputs/", str(dest)], env=env,
                            capture_output=True, text=True, timeout=60)
    assert copied.returncode != 0
    assert "symlink" in copied.stderr and "Traceback" not in copied.stderr
    assert _tree(outside) == {"keep.txt": b"mine"}  # nothing written outside the destination
    # Without the planted link, the same copy works.
    (dest / "ckpt").unlink()
    again = subprocess.run([sys.executable, "-m", "runyard.cli.main", "cp", "r1:outputs/", str(dest)], env=env,
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    assert (dest / "ckpt" / "model.bin").read_bytes() == b"weights"


def _stored(env: dict[str, str], cwd: Path, number: int) -> list[str]:
    api = api_of(env, cwd)
    try:
        return [a.path for a in api.run(number).artifacts()]
    finally:
        api.close()


def test_a_runs_outputs_never_follow_a_symlink_out_of_its_working_directory(
        project: Path, env: dict[str, str], tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "key.pem").write_text("not the run's")
    (project / "train.py").write_text(textwrap.dedent(f"""
        import os
        os.symlink({str(secret)!r}, "outputs")
        os.symlink("/etc", "data")
        os.makedirs("results")
        os.symlink({str(secret / "key.pem")!r}, "results/key.pem")
        open("results/real.txt", "w").write("written by the run")
    """))
    number = launch(env, project, "--", "python", "train.py")
    assert wait_status(env, project, number, TERMINAL, 60) == "finished"
    stored = _stored(env, project, number)
    assert stored == ["results/real.txt"]  # its own file, nothing of /etc or of the secret directory
    texts = [text for _, text in log_of(env, project, number)]
    assert any("not keeping outputs/" in t and "symlink" in t for t in texts), texts
    assert any("not keeping results/key.pem as" in t and "symlink" in t for t in texts), texts  # a file too


def test_a_run_that_replaces_its_working_directory_with_a_symlink_stores_nothing_from_there(
        project: Path, env: dict[str, str], tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "key.pem").write_text("not the run's")
    (project / "train.py").write_text(textwrap.dedent(f"""
        import os
        work = os.getcwd()
        os.chdir("..")
        os.rename(work, work + "-moved")
        os.symlink({str(secret)!r}, work)
    """))
    number = launch(env, project, "--", "python", "train.py")
    assert wait_status(env, project, number, TERMINAL, 60) == "finished"
    assert _stored(env, project, number) == []
    texts = [text for _, text in log_of(env, project, number)]
    assert any("working directory" in t and "replaced" in t for t in texts), texts
    assert os.listdir(secret) == ["key.pem"]


def test_a_directory_swapped_for_a_symlink_during_a_pass_is_not_followed(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The race a pass cannot see by listing: a directory the walk found is replaced by a symlink
    before its files are read. The file is opened without following it out of the working directory."""
    from runyard.exec.outputs import Outputs
    from runyard.store.disk_artifacts import DiskArtifacts

    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "key.pem").write_text("not the run's")
    work = tmp_path / "work"
    work.mkdir()
    (work / "own.txt").write_text("the run's")
    (work / "sub").symlink_to(secret, target_is_directory=True)  # swapped in after the listing
    store = DiskArtifacts(tmp_path / "artifacts")
    store.ensure()
    recorded: list[str] = []
    outputs = Outputs(work, store, lambda path, *_: recorded.append(path), lambda _: None)
    listed = [("own.txt", work / "own.txt"), ("sub/key.pem", work / "sub" / "key.pem")]
    monkeypatch.setattr(outputs, "_candidates", lambda: iter(listed))
    outputs.upload(final=True)
    assert recorded == ["own.txt"]


def test_a_working_directory_swapped_for_a_symlink_after_the_pass_checked_it_is_not_followed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The race of the test above, made certain: the command swaps its working directory for a
    symlink after a pass checked the directory and before it walks it. Files are judged against
    the directory the code was placed in, not against wherever its path leads now."""
    from runyard.exec.outputs import Outputs
    from runyard.store.disk_artifacts import DiskArtifacts

    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "key.pem").write_text("not the run's")
    work = tmp_path / "work"
    work.mkdir()
    store = DiskArtifacts(tmp_path / "artifacts")
    store.ensure()
    recorded: list[str] = []
    outputs = Outputs(work, store, lambda path, *_: recorded.append(path), lambda _: None)
    outputs.snapshot({})
    work.rename(tmp_path / "work-moved")
    work.symlink_to(secret, target_is_directory=True)
    monkeypatch.setattr(outputs, "_same_directory", lambda: True)  # checked just before the swap
    outputs.upload(final=True)
    assert recorded == []
