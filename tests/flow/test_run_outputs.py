"""What a launched run leaves behind: the files it writes anywhere in its working directory are kept
(not only ``outputs/``), figures shown with plt.show() are saved, big code files are shared between
runs instead of copied, and a copy keeps the file's mode."""

from __future__ import annotations

import hashlib
import os
import stat
import sys
from pathlib import Path

import pytest
from tests.flow.test_execution import TERMINAL, api_of, cli, launch, log_of, run_directory_of, wait_status

from runyard.config import resolve

PY = sys.executable

WRITER = """\
import os, sys
here = os.path.dirname(os.path.abspath(__file__))
open('traindata.pt', 'wb').write(b'tensors')                   # in the working directory
open(os.path.join(here, 'ckpt.pt'), 'wb').write(b'weights')    # next to the script
os.makedirs('outputs', exist_ok=True)
open('outputs/model.pt', 'wb').write(b'model')
open('notes.txt', 'a').write('changed by the run\\n')          # a snapshot file, changed
os.makedirs('__pycache__', exist_ok=True)
open('__pycache__/x.pyc', 'wb').write(b'cache')
os.makedirs('venv/lib', exist_ok=True)
open('venv/lib/thing.py', 'w').write('x = 1')
os.makedirs('scratch', exist_ok=True)
open('scratch/tmp.bin', 'wb').write(b'ignored by .runyardignore')
open('big.bin', 'wb').write(b'0' * (2 << 20))                  # over the 1 MiB limit set below
if sys.argv[1:] == ['plot']:
    import matplotlib.pyplot as plt
    plt.plot([1, 2, 3])
    plt.show()
    plt.figure()
    plt.plot([3, 2, 1])
    plt.show()
"""


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_") and k != "MPLBACKEND"}
    return {**keep, "RUNYARD_HOME": str(tmp_path / "home"), "RUNYARD_SYSTEM_INTERVAL": "0",
            "RUNYARD_SLOTS": "2", "RUNYARD_OUTPUTS_INTERVAL": "0.3", "RUNYARD_OUTPUT_LIMIT": "1"}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    (root / "src").mkdir(parents=True)
    (root / "src" / "train.py").write_text(WRITER)
    (root / "notes.txt").write_text("from the snapshot\n")
    (root / "data.csv").write_text("a,b\n1,2\n")
    (root / ".runyardignore").write_text("scratch/\n")
    return root


def artifacts_of(env: dict[str, str], cwd: Path, number: int) -> dict[str, int]:
    api = api_of(env, cwd)
    try:
        return {a.path: a.size for a in api.store.list_artifacts(number)}
    finally:
        api.close()


def test_files_a_script_writes_anywhere_in_its_directory_are_kept_and_can_be_copied_and_mounted(
        project: Path, env: dict[str, str], tmp_path: Path) -> None:
    plotting = pytest.importorskip("matplotlib") is not None
    number = launch(env, project, "--", PY, "src/train.py", "plot")
    assert wait_status(env, project, number, TERMINAL) == "finished", log_of(env, project, number)
    kept = artifacts_of(env, project, number)
    assert kept == {"traindata.pt": 7, "src/ckpt.pt": 7, "outputs/model.pt": 5, "notes.txt": 37,
                    "figures/figure-001.png": kept.get("figures/figure-001.png", -1),
                    "figures/figure-002.png": kept.get("figures/figure-002.png", -1)}
    assert plotting and kept["figures/figure-001.png"] > 0 and kept["figures/figure-002.png"] > 0
    texts = [text for _, text in log_of(env, project, number)]
    assert any("not keeping big.bin as an output" in t and "output_limit" in t for t in texts), texts
    assert any("figure 1 saved as figures/figure-001.png" in t for t in texts), texts

    shown = cli(env, project, "show", str(number)).stdout
    assert "traindata.pt  7 bytes" in shown and "src/ckpt.pt  7 bytes" in shown
    copied = tmp_path / "copied.pt"
    cli(env, project, "cp", f"{number}:traindata.pt", str(copied))
    assert copied.read_bytes() == b"tensors"
    figure = tmp_path / "figure.png"
    cli(env, project, "cp", f"{number}:figures/figure-002.png", str(figure))
    assert figure.read_bytes().startswith(b"\x89PNG")

    (project / "use.py").write_text("print(open('data.pt', 'rb').read().decode())\n")
    user = launch(env, project, "--mount", f"{number}:traindata.pt:data.pt", "--", PY, "use.py")
    assert wait_status(env, project, user, TERMINAL) == "finished"
    assert "tensors" in [text for _, text in log_of(env, project, user)]
    assert artifacts_of(env, project, user) == {}  # the mount and the unchanged code are not outputs


def test_the_figure_backend_yields_to_env_and_is_harmless_without_matplotlib_or_runyard(
        project: Path, env: dict[str, str]) -> None:
    # Under -S (no site-packages) neither matplotlib nor runyard is importable: the backend module is
    # found through the run's PYTHONPATH, and a script that does not plot runs as ever.
    (project / "show.py").write_text(
        "import os, importlib.util\n"
        "print('backend', os.environ.get('MPLBACKEND'))\n"
        "print('found', importlib.util.find_spec('runyard_mplbackend') is not None)\n"
        "print('matplotlib', importlib.util.find_spec('matplotlib') is not None)\n")
    chosen = launch(env, project, "--env", "MPLBACKEND=agg", "--", PY, "show.py")
    default = launch(env, project, "--", PY, "-S", "show.py")
    assert wait_status(env, project, chosen, TERMINAL) == "finished"
    assert wait_status(env, project, default, TERMINAL) == "finished"
    assert "backend agg" in [text for _, text in log_of(env, project, chosen)]
    texts = {text for _, text in log_of(env, project, default)}
    assert {"backend module://runyard_mplbackend", "found True", "matplotlib False"} <= texts, texts


APPEND = """\
try:
    with open('big.bin', 'ab') as f:
        f.write(b'appended by the run')
    print('appended')
except PermissionError:
    print('refused')
"""


def test_two_runs_of_a_tree_with_a_big_file_share_its_blocks_and_neither_can_change_the_store(
        tmp_path: Path, env: dict[str, str]) -> None:
    env = {**env, "RUNYARD_BIG_CODE_FILES": "link"}  # this file system cannot clone: links are asked for
    project = tmp_path / "big"
    project.mkdir()
    content = os.urandom(8 << 20)
    (project / "big.bin").write_bytes(content)
    (project / "append.py").write_text(APPEND)
    runs = [launch(env, project, "--", PY, "append.py") for _ in range(2)]
    for number in runs:
        assert wait_status(env, project, number, TERMINAL) == "finished", log_of(env, project, number)
    sha = hashlib.sha256(content).hexdigest()
    blob = Path(resolve(environ=env, cwd=project).artifacts) / "objects" / sha[:2] / sha[2:]
    copies = [run_directory_of(env, project, number) / "work" / "big.bin" for number in runs]
    # One set of blocks for the store and both runs: the same inode (hard links on this file system).
    assert copies[0].stat().st_ino == copies[1].stat().st_ino == blob.stat().st_ino
    assert {texts for number in runs for _, texts in log_of(env, project, number)} >= {"refused"}
    for path in [blob, *copies]:
        assert path.read_bytes() == content
        assert not path.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
    assert artifacts_of(env, project, runs[0]) == {}  # unchanged code is no output


OVERWRITE = "with open('big.bin', 'wb') as f:\n    f.write(b'the new model')\n"


def test_a_script_writing_into_a_shared_big_file_is_told_why_and_a_copy_setting_lets_it(
        tmp_path: Path, env: dict[str, str]) -> None:
    project = tmp_path / "stale"
    project.mkdir()
    (project / "big.bin").write_bytes(os.urandom(2 << 20))  # say, a checkpoint from an earlier local run
    (project / "overwrite.py").write_text(OVERWRITE)
    # Links asked for by the project's runyard.toml: it counts as submitted, whatever the agent (started
    # by this launch, from a shell without the setting) would choose.
    (project / "runyard.toml").write_text('big_code_files = "link"\n')
    number = launch(env, project, "--", PY, "overwrite.py")
    assert wait_status(env, project, number, TERMINAL) == "failed"
    api = api_of(env, project)
    try:
        message = api.run(number).status_message or ""
    finally:
        api.close()
    assert "big.bin" in message and 'big_code_files = "copy"' in message, message

    (project / "runyard.toml").write_text('big_code_files = "copy"\n')  # as the message says (the default)
    number = launch(env, project, "--", PY, "overwrite.py")
    assert wait_status(env, project, number, TERMINAL) == "finished", log_of(env, project, number)
    cli(env, project, "cp", f"{number}:big.bin", str(tmp_path / "out.bin"))
    assert (tmp_path / "out.bin").read_bytes() == b"the new model"
    assert len((project / "big.bin").read_bytes()) == 2 << 20  # the working tree is never touched


def test_cp_keeps_the_executable_bit_the_file_had_in_the_run(
        project: Path, env: dict[str, str], tmp_path: Path) -> None:
    (project / "make.py").write_text(
        "import os\nos.makedirs('outputs', exist_ok=True)\n"
        "open('outputs/run.sh', 'w').write('#!/bin/sh\\necho hi\\n')\nos.chmod('outputs/run.sh', 0o755)\n"
        "open('plain.txt', 'w').write('x')\nos.chmod('plain.txt', 0o644)\n")
    number = launch(env, project, "--", PY, "make.py")
    assert wait_status(env, project, number, TERMINAL) == "finished"
    cli(env, project, "cp", f"{number}:outputs/run.sh", str(tmp_path / "run.sh"))
    assert stat.S_IMODE((tmp_path / "run.sh").stat().st_mode) == 0o755
    cli(env, project, "cp", f"{number}:plain.txt", str(tmp_path / "plain.txt"))
    assert stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode) == 0o644
