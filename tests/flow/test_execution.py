"""Launching runs with real processes: queue and slots, snapshots, supervisors, outputs, stop, rerun."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from runyard.api import Api
from runyard.config import resolve
from runyard.exec.submit import Submission, submit

RUNYARD = [sys.executable, "-m", "runyard.cli.main"]
TERMINAL = {"finished", "failed", "stopped", "timeout", "lost"}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    (root / "train.py").write_text("import json, sys\nprint(json.dumps({'step': 0, 'loss': 0.5}))\n")
    return root


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")}
    return {**keep, "RUNYARD_HOME": str(tmp_path / "home"), "RUNYARD_SYSTEM_INTERVAL": "0",
            "RUNYARD_SLOTS": "2", "RUNYARD_OUTPUTS_INTERVAL": "0.3"}


def cli(env: dict[str, str], cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([*RUNYARD, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(f"runyard {' '.join(args)} -> {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


def launch(env: dict[str, str], cwd: Path, *args: str) -> int:
    out = cli(env, cwd, "run", "--json", *args)
    return int(json.loads(out.stdout)["number"])


def api_of(env: dict[str, str], cwd: Path) -> Api:
    return Api(resolve(environ=env, cwd=cwd))


def wait_for(check: Callable[[], bool], timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def status(env: dict[str, str], cwd: Path, number: int) -> str:
    api = api_of(env, cwd)
    try:
        return api.run(number).status.value
    finally:
        api.close()


def wait_status(env: dict[str, str], cwd: Path, number: int, wanted: set[str], timeout: float = 60.0) -> str:
    seen: list[str] = []

    def reached() -> bool:
        seen.append(status(env, cwd, number))
        return seen[-1] in wanted

    wait_for(reached, timeout, f"run {number} to become {'/'.join(sorted(wanted))} (last: {seen[-1:]})")
    return seen[-1]


def test_a_launched_script_runs_on_its_snapshot_and_json_lines_become_metrics(
        project: Path, env: dict[str, str]) -> None:
    (project / "data.txt").write_text("original")
    (project / "train.py").write_text(
        "import json, time\n"
        "time.sleep(1.0)\n"
        "print(open('data.txt').read())\n"
        "for i in range(3):\n"
        "    print(json.dumps({'step': i, 'loss': 1.0 / (i + 1), 'acc': 0.5}))\n"
        "print(json.dumps({'note': 'not numbers'}))\n"
    )
    number = launch(env, project, "--name", "snap", "--", "python", "train.py")
    (project / "data.txt").write_text("edited after submission")  # must not reach the run
    (project / "train.py").unlink()
    assert wait_status(env, project, number, TERMINAL) == "finished"
    api = api_of(env, project)
    run = api.run(number)
    texts = [line.text for line in run.logs()]
    assert "original" in texts and "edited after submission" not in texts
    assert run.history("loss").value.tolist() == [1.0, 0.5, 1.0 / 3] and run.history("loss").step.tolist() == [0, 1, 2]
    assert {s.key for s in run.metrics()} == {"loss", "acc"}
    assert run.exit_code == 0 and run.command == ["python", "train.py"] and run.snapshot_id
    api.close()


def test_thirty_runs_on_two_slots_run_two_at_a_time_in_priority_order(project: Path, env: dict[str, str]) -> None:
    settings = resolve(environ=env, cwd=project)
    sleeper = ["python", "-c", "import time; time.sleep(0.3)"]
    # Two long runs hold both slots while the other 28 are queued with mixed priorities.
    blockers = [launch(env, project, "--", "python", "-c", "import time; time.sleep(3)") for _ in range(2)]
    wait_for(lambda: all(status(env, project, b) == "running" for b in blockers), 30, "the blockers to run")
    queued = []
    for i in range(28):
        done = submit(settings, Submission(command=sleeper, shell=False, cwd=project, priority=i % 3,
                                           name=f"q{i}"))
        queued.append((done.number, i % 3))
    api = api_of(env, project)
    try:
        wait_for(lambda: all(api.store.get_run(n).status.value in TERMINAL for n, _ in queued), 180,
                 "all queued runs to end")
        runs = [api.store.get_run(n) for n in blockers + [n for n, _ in queued]]
    finally:
        api.close()
    assert all(r.status.value == "finished" for r in runs)
    events = sorted([(r.started_at, 1) for r in runs] + [(r.ended_at, -1) for r in runs])
    running = peak = 0
    for _, delta in events:
        running += delta
        peak = max(peak, running)
    assert peak <= 2
    # Queue order: higher priority first, then submission order. Two runs claimed in the same
    # scheduler pass may have their supervisors start a few milliseconds apart in either order.
    expected = sorted(runs[2:], key=lambda r: (-r.priority, r.number))
    for earlier, later in itertools.pairwise(expected):
        assert earlier.started_at <= later.started_at + 0.25, (earlier.number, later.number)
    assert expected[0].priority == 2 and expected[-1].priority == 0


def test_killing_the_agent_loses_no_queued_run(project: Path, env: dict[str, str]) -> None:
    env = {**env, "RUNYARD_SLOTS": "1"}
    numbers = [launch(env, project, "--", "python", "-c", "import time; time.sleep(0.5)") for _ in range(4)]
    settings = resolve(environ=env, cwd=project)
    pid = int(next((settings.home / "agents").glob("*.lock")).read_text().strip())
    os.kill(pid, signal.SIGKILL)
    from runyard.sdk.agent_launch import agent_running

    wait_for(lambda: not agent_running(settings), 10, "the killed agent's lock to be released")
    cli(env, project, "ps")  # any command that finds queued runs starts an agent again
    for number in numbers:
        assert wait_status(env, project, number, TERMINAL, 60) == "finished"


def test_a_killed_supervisor_ends_its_run_as_lost_and_takes_its_command_along(
        project: Path, env: dict[str, str]) -> None:
    number = launch(env, project, "--", "python", "-c", "import time; time.sleep(60)")
    wait_status(env, project, number, {"running"}, 30)
    settings = resolve(environ=env, cwd=project)
    api = api_of(env, project)
    run_id = api.run(number).id
    api.close()
    pid = int((settings.home / "runs" / run_id / "supervisor.pid").read_text())
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    os.kill(pid, signal.SIGKILL)
    assert wait_status(env, project, number, TERMINAL, 20) == "lost"
    for child in children:  # the command died with its supervisor (parent-death signal)
        wait_for(lambda c=child: not Path(f"/proc/{c}").exists(), 10, f"process {child} to end")


def test_timeout_and_stop(project: Path, env: dict[str, str]) -> None:
    timed = launch(env, project, "--timeout", "1s", "--", "python", "-c", "import time; time.sleep(60)")
    stopped = launch(env, project, "--", "python", "-c", "import time; time.sleep(60)")
    queued = launch(env, project, "--", "python", "-c", "import time; time.sleep(60)")
    assert wait_status(env, project, timed, TERMINAL, 30) == "timeout"
    wait_status(env, project, stopped, {"running"}, 30)
    assert status(env, project, queued) in {"queued", "starting", "running"}
    out = cli(env, project, "stop", str(stopped), str(queued))
    assert f"run {stopped}" in out.stdout
    assert wait_status(env, project, stopped, TERMINAL, 30) == "stopped"
    assert wait_status(env, project, queued, TERMINAL, 30) == "stopped"
    api = api_of(env, project)
    assert "timeout of 1 s" in (api.run(timed).status_message or "")
    api.close()


def test_a_checkpoint_can_be_copied_while_the_run_is_still_running(
        project: Path, env: dict[str, str], tmp_path: Path) -> None:
    (project / "train.py").write_text(
        "import os, time\n"
        "os.makedirs('outputs/ckpt', exist_ok=True)\n"
        "open('outputs/ckpt/step-1.txt', 'w').write('weights at step 1')\n"
        "time.sleep(30)\n"
    )
    number = launch(env, project, "--", "python", "train.py")
    dest = tmp_path / "copied"

    def copied() -> bool:
        result = cli(env, project, "cp", f"{number}:outputs/ckpt/", str(dest), check=False)
        return result.returncode == 0

    wait_for(copied, 30, "the checkpoint to be copyable")
    assert status(env, project, number) == "running"
    assert (dest / "step-1.txt").read_text() == "weights at step 1"
    single = tmp_path / "one.txt"
    cli(env, project, "cp", f"{number}:outputs/ckpt/step-1.txt", str(single))
    assert single.read_text() == "weights at step 1"
    # DEST ending in a slash is a directory, made if it does not exist (not a file named like it)
    cli(env, project, "cp", f"{number}:outputs/ckpt/step-1.txt", f"{tmp_path / 'new-dir'}/")
    assert (tmp_path / "new-dir" / "step-1.txt").read_text() == "weights at step 1"
    missing = cli(env, project, "cp", f"{number}:outputs/nothing", str(dest), check=False)
    assert missing.returncode == 2 and "has no artifact" in missing.stderr
    cli(env, project, "stop", str(number))


def test_rerun_records_its_parent_and_changes_params(project: Path, env: dict[str, str]) -> None:
    (project / "train.py").write_text("import os\nprint('lr', os.environ['RUNYARD_PARAM_lr'])\n"
                                      "print(open('runyard-params.json').read())\n")
    first = launch(env, project, "--param", "lr=0.1", "--param", "layers=3", "--label", "base", "--", "python",
                   "train.py")
    assert wait_status(env, project, first, TERMINAL) == "finished"
    out = cli(env, project, "rerun", str(first), "--param", "lr=0.5")
    second = int(out.stdout.split()[1])
    assert wait_status(env, project, second, TERMINAL) == "finished"
    api = api_of(env, project)
    parent, child = api.run(first), api.run(second)
    assert child.parent == first and child.snapshot_id == parent.snapshot_id
    assert parent.config == {"lr": 0.1, "layers": 3} and child.config == {"lr": 0.5, "layers": 3}
    assert "lr 0.5" in [line.text for line in child.logs()]
    assert child.labels == ("base",)
    shown = json.loads(cli(env, project, "show", str(first), "--json").stdout)
    assert shown["children"] == [second]
    api.close()


def test_mounts_are_read_only_and_recorded_as_inputs(project: Path, env: dict[str, str], tmp_path: Path) -> None:
    data = tmp_path / "dataset"
    data.mkdir()
    (data / "train.csv").write_text("a,b\n1,2\n")
    (project / "make.py").write_text("import os\nos.makedirs('outputs', exist_ok=True)\n"
                                     "open('outputs/model.txt', 'w').write('model v1')\n")
    maker = launch(env, project, "--", "python", "make.py")
    assert wait_status(env, project, maker, TERMINAL) == "finished"
    (project / "use.py").write_text(
        "import os\n"
        "print(open('data/train.csv').read().splitlines()[1])\n"
        "print(open('model/model.txt').read())\n"
        "try:\n    open('data/train.csv', 'a').write('x')\n    print('writable')\n"
        "except OSError:\n    print('read-only')\n"
    )
    user = launch(env, project, "--mount", f"{data}:data", "--mount", f"{maker}:outputs:model", "--", "python",
                  "use.py")
    assert wait_status(env, project, user, TERMINAL) == "finished"
    api = api_of(env, project)
    texts = [line.text for line in api.run(user).logs()]
    assert "1,2" in texts and "model v1" in texts
    if os.geteuid() != 0:  # root ignores file permissions
        assert "read-only" in texts
    inputs = {i.mount: i for i in api.store.inputs_of(user)}
    assert inputs["data"].kind == "path" and inputs["model"].source_run == maker
    assert [i.run for i in api.store.consumers_of_run(maker)] == [user]
    assert (data / "train.csv").read_text() == "a,b\n1,2\n"
    api.close()


def test_a_mount_over_a_file_or_directory_of_the_snapshot_replaces_it_and_says_so(
        project: Path, env: dict[str, str], tmp_path: Path) -> None:
    (project / "data").mkdir()
    (project / "data" / "sample.csv").write_text("committed sample")
    (project / "config.json").write_text('{"from": "snapshot"}')
    full = tmp_path / "full"
    full.mkdir()
    (full / "all.csv").write_text("the full dataset")
    (tmp_path / "prod.json").write_text('{"from": "mount"}')
    (project / "read.py").write_text(
        "import os\nprint(sorted(os.listdir('data')), open('data/all.csv').read(), open('config.json').read())\n")
    number = launch(env, project, "--mount", f"{full}:data", "--mount", f"{tmp_path / 'prod.json'}:config.json",
                    "--", "python", "read.py")
    assert wait_status(env, project, number, TERMINAL) == "finished"
    texts = [text for _, text in log_of(env, project, number)]
    assert "['all.csv'] the full dataset {\"from\": \"mount\"}" in texts, texts
    assert any("mount at data replaces the directory" in t for t in texts), texts
    assert any("mount at config.json replaces the file" in t for t in texts), texts


def test_pip_installs_into_a_cached_environment_the_next_run_reuses(project: Path, env: dict[str, str]) -> None:
    (project / "colour.py").write_text("import termcolor\nprint('termcolor', termcolor.__name__)\n")
    first = launch(env, project, "--pip", "termcolor", "--", "python", "colour.py")
    assert wait_status(env, project, first, TERMINAL, 300) == "finished"
    second = launch(env, project, "--pip", "termcolor", "--", "python", "colour.py")
    assert wait_status(env, project, second, TERMINAL, 120) == "finished"
    api = api_of(env, project)
    first_log = [line.text for line in api.run(first).logs()]
    second_log = [line.text for line in api.run(second).logs()]
    assert any("building a package environment" in t for t in first_log) and "termcolor termcolor" in first_log
    assert any("reusing the package environment" in t for t in second_log) and "termcolor termcolor" in second_log
    api.close()
    bad = launch(env, project, "--pip", "runyard-no-such-package-zzz", "--", "python", "colour.py")
    assert wait_status(env, project, bad, TERMINAL, 300) == "failed"
    api = api_of(env, project)
    run = api.run(bad)
    assert "could not start" in (run.status_message or "")
    assert any("runyard-no-such-package-zzz" in line.text for line in run.logs())  # the installer's own words
    api.close()


def test_user_values_never_reach_a_shell(project: Path, env: dict[str, str], tmp_path: Path) -> None:
    nasty = ["$(touch marker)", "`touch marker`", ";touch marker", "a\ntouch marker", "|touch marker"]
    accepted = []
    for value in nasty:
        accepted.append(launch(env, project, "--param", f"p={value}", "--env", f"E={value}", "--note", value,
                               "--", "python", "-c", "import sys, os; print(sys.argv[1:], os.environ['E'])",
                               value))
        for option in ("--name", "--label", "--pip", "--mount", "--machine", "--timeout", "--memory"):
            result = cli(env, project, "run", "--json", option, value, "--", "true", check=False)
            if option == "--name" and "\n" not in value:  # free text, harmless as it is never interpolated
                assert result.returncode == 0
                accepted.append(int(json.loads(result.stdout)["number"]))
                continue
            assert result.returncode == 2, (option, value, result.stderr)
            assert result.stderr.count("\n") == 1 and "runyard: error:" in result.stderr
        for option in ("--param", "--env"):
            result = cli(env, project, "run", option, value, "--", "true", check=False)
            assert result.returncode == 2, (option, value)
    for number in accepted:
        assert wait_status(env, project, number, TERMINAL, 60) == "finished"
    settings = resolve(environ=env, cwd=project)
    assert not list(project.rglob("marker")) and not list(settings.home.rglob("marker"))
    assert not list(tmp_path.rglob("marker"))


def test_mistakes_exit_2_and_queue_nothing(project: Path, env: dict[str, str]) -> None:
    cases = [
        ("run", "--param", "novalue", "--", "true"),
        ("run", "--no-such-option", "--", "true"),
        ("run", "--timeout", "soon", "--", "true"),
        ("run", "--gpus", "-1", "--", "true"),
        ("run", "--mount", "missing-dir:data", "--", "true"),
        ("run", "--mount", "./:/etc", "--", "true"),
        ("run", "--on", "the-cloud", "--", "true"),
        ("show", "404"),
        ("logs", "nobody"),
        ("stop", "404"),
        ("cp", "404:outputs", "."),
        ("label", "404", "+x"),
        ("label", "1", "x"),
    ]
    for args in cases:
        result = cli(env, project, *args, check=False)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr
    assert "nothing queued" in cli(env, project, "ps").stdout
    assert cli(env, project, "ls").stdout.strip() == "no runs match"


def test_ls_ps_label_note_and_follow(project: Path, env: dict[str, str]) -> None:
    (project / "train.py").write_text("import sys\nprint('hello from the run')\nsys.exit(3)\n")
    result = cli(env, project, "run", "-f", "--name", "followed", "--", "python", "train.py", check=False)
    assert result.returncode == 3 and "hello from the run" in result.stdout
    cli(env, project, "label", "followed", "+baseline", "+wide")
    cli(env, project, "label", "followed", "-wide")
    cli(env, project, "note", "followed", "exit 3 on purpose")
    rows = json.loads(cli(env, project, "ls", "--json", "--label", "baseline").stdout)
    assert [r["name"] for r in rows] == ["followed"] and rows[0]["labels"] == ["baseline"]
    assert rows[0]["status"] == "failed" and rows[0]["exit_code"] == 3 and rows[0]["notes"] == "exit 3 on purpose"
    logs = cli(env, project, "logs", "followed", "--tail", "1")
    assert logs.stdout.strip() == "hello from the run"
    shell = launch(env, project, "echo one; echo two")
    assert wait_status(env, project, shell, TERMINAL) == "finished"
    assert cli(env, project, "logs", str(shell)).stdout.split("\n")[-3:-1] == ["one", "two"]


# -- line capture, outputs, the run's environment (issue 12, items 9-11) ---------------------------

def run_directory_of(env: dict[str, str], cwd: Path, number: int) -> Path:
    api = api_of(env, cwd)
    try:
        run_id = api.run(number).id
    finally:
        api.close()
    return resolve(environ=env, cwd=cwd).home / "runs" / run_id


def supervisor_pid(env: dict[str, str], cwd: Path, number: int) -> int:
    pid_file = run_directory_of(env, cwd, number) / "supervisor.pid"
    wait_for(pid_file.exists, 30, f"run {number}'s supervisor to start")
    return int(pid_file.read_text())


def log_of(env: dict[str, str], cwd: Path, number: int) -> list[tuple[str, str]]:
    api = api_of(env, cwd)
    try:
        return [(line.stream, line.text) for line in api.run(number).logs(limit=100_000)]
    finally:
        api.close()


def test_a_progress_bar_is_logged_as_its_final_state_and_a_huge_line_is_cut_without_being_held(
        project: Path, env: dict[str, str]) -> None:
    from runyard.sdk.tee import MAX_LINE

    huge = 256 << 20
    (project / "train.py").write_text(
        "import os, sys, time\n"
        "for i in range(2001):  # a tqdm-like bar: one line, redrawn 2,001 times\n"
        "    sys.stdout.write(f'\\repoch 1: {i * 100 // 2000:3d}%|{\"#\" * (i // 100):<20}| {i}/2000')\n"
        "    sys.stdout.flush()\n"
        "print()\n"
        "print('after the bar', flush=True)\n"
        f"sys.stderr.write('x' * {huge})  # one line of 256 MiB, its newline still to come\n"
        "sys.stderr.flush()\n"
        "open('written', 'w').close()\n"
        "while not os.path.exists('release'):\n"
        "    time.sleep(0.05)\n"
        "sys.stderr.write('\\n')\n"
        "print('done', flush=True)\n"
    )
    number = launch(env, project, "--", "python", "train.py")
    pid = supervisor_pid(env, project, number)
    work = run_directory_of(env, project, number) / "work"
    wait_for((work / "written").exists, 60, "the script to write its huge line")
    # Peak memory of the supervisor once the script's 256 MiB went through its pipe.
    status_lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    peak = int(next(line for line in status_lines if line.startswith("VmHWM:")).split()[1]) * 1024
    try:
        wait_for(lambda: ("stdout", "after the bar") in log_of(env, project, number), 30, "the bar to be logged")
        bar = [text for stream, text in log_of(env, project, number) if stream == "stdout" and "epoch 1" in text]
        problems = []
        if bar != ["epoch 1: 100%|####################| 2000/2000"]:
            problems.append(f"the bar was logged as {len(bar)} line(s) of {[len(t) for t in bar]} characters, "
                            f"starting {bar[0][:60]!r}" if bar else "the bar was not logged")
        if peak >= 128 << 20:
            problems.append(f"the supervisor held {peak / 2**20:.0f} MiB for a 256 MiB line")
        assert not problems, problems
    finally:
        (work / "release").write_text("")
    assert wait_status(env, project, number, TERMINAL) == "finished"
    lines = log_of(env, project, number)
    assert ("stdout", "done") in lines
    cut = [text for stream, text in lines if stream == "stderr"]
    assert len(cut) == 1 and cut[0].startswith("x" * MAX_LINE) and len(cut[0]) < MAX_LINE + 100
    assert f"{huge - MAX_LINE:,}" in cut[0]  # says how much of the line was not kept
    assert max(len(text) for _, text in lines) < MAX_LINE + 100


UPLOADING = (
    "import os, signal, sys, time\n"
    "def stop(*_):\n"
    "    print('got SIGTERM', flush=True)\n"
    "    sys.exit(143)\n"
    "signal.signal(signal.SIGTERM, stop)\n"
    "os.makedirs('outputs', exist_ok=True)\n"
    "for i in range(4):  # 1 GiB in an instant (sparse files), seconds of uploading\n"
    "    with open(f'outputs/part-{i}.bin', 'wb') as f:\n"
    "        f.write(bytes([i]))\n"
    "        f.truncate(256 << 20)\n"
    "print('written', flush=True)\n"
    "time.sleep(120)\n"
)


def uploading(pid: int) -> bool:
    """Whether the supervisor has a file of the run's outputs/ open (it is uploading it)."""
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            if "/work/outputs/" in os.readlink(fd):
                return True
        except OSError:
            continue
    return False


def test_stop_and_timeout_reach_the_command_while_outputs_are_uploading(
        project: Path, env: dict[str, str]) -> None:
    (project / "train.py").write_text(UPLOADING)
    # Storing 1 GiB takes seconds (hashing alone is bounded by the CPU), and starts once the files
    # have settled, about a second in: the 2 s timeout falls while it goes on.
    timed = launch(env, project, "--timeout", "2s", "--", "python", "train.py")
    stopped = launch(env, project, "--", "python", "train.py")
    pid = supervisor_pid(env, project, stopped)
    wait_for(lambda: uploading(pid), 30, f"run {stopped} to upload its outputs")
    cli(env, project, "stop", str(stopped))
    for number, wanted in ((timed, "timeout"), (stopped, "stopped")):
        assert wait_status(env, project, number, TERMINAL, 60) == wanted
        lines = log_of(env, project, number)
        got = lines.index(("stdout", "got SIGTERM"))
        upload = next(i for i, (stream, text) in enumerate(lines) if stream == "system" and text.startswith("uploaded"))
        assert got < upload, f"run {number}: the command got SIGTERM only after an upload ended: {lines}"
        api = api_of(env, project)
        kept = sorted(a.path for a in api.run(number).artifacts())
        api.close()
        assert kept == [f"outputs/part-{i}.bin" for i in range(4)]  # stopping lost no output


def test_a_checkpoint_written_over_two_seconds_is_stored_once_and_whole(
        project: Path, env: dict[str, str], tmp_path: Path) -> None:
    import hashlib

    (project / "train.py").write_text(
        "import os, time\n"
        "os.makedirs('outputs', exist_ok=True)\n"
        "with open('outputs/ckpt.bin', 'wb') as f:  # written a MiB at a time, as a checkpoint is\n"
        "    for i in range(40):\n"
        "        f.write(bytes([i]) * (1 << 20))\n"
        "        f.flush()\n"
        "        time.sleep(0.05)\n"
        "time.sleep(2)\n"
    )
    expected = b"".join(bytes([i]) * (1 << 20) for i in range(40))
    sha = hashlib.sha256(expected).hexdigest()
    number = launch(env, project, "--", "python", "train.py")
    assert wait_status(env, project, number, TERMINAL) == "finished"
    copied = tmp_path / "ckpt.bin"
    cli(env, project, "cp", f"{number}:outputs/ckpt.bin", str(copied))
    assert copied.read_bytes() == expected
    home = resolve(environ=env, cwd=project).home
    work = run_directory_of(env, project, number) / "work"
    copies = []  # every file in the home, but the script's own, holding the checkpoint or a piece of it
    for path in home.rglob("*"):
        if path.is_file() and not path.is_relative_to(work) and path.stat().st_size >= 1 << 20:
            with path.open("rb") as f:
                if f.read(1 << 20) == expected[: 1 << 20]:
                    copies.append(str(path.relative_to(home)))
    assert copies == [f"artifacts/objects/{sha[:2]}/{sha[2:]}"]


def test_each_run_sees_the_environment_of_the_shell_that_submitted_it(
        project: Path, env: dict[str, str], tmp_path: Path) -> None:
    shells = {}
    for name in ("agent", "a", "b"):
        venv = tmp_path / f"venv-{name}"
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
        shells[name] = {**env, "PATH": f"{venv / 'bin'}{os.pathsep}{env['PATH']}", "VIRTUAL_ENV": str(venv)}
    # The first submission starts the agent: its shell has a variable no run may see.
    shells["agent"]["ONLY_IN_THE_AGENTS_SHELL"] = "leaked"
    blocker = launch(shells["agent"], project, "--", "python", "-c", "import time; time.sleep(60)")
    wait_status(env, project, blocker, {"running"}, 30)
    (project / "probe.py").write_text(
        "import json, os, sys\n"
        "print(json.dumps({'python': sys.executable, 'env': dict(os.environ)}))\n"
    )
    # RUNYARD_LAB_IP would move a JupyterLab run off loopback: runyard's own, never the run's to set.
    a = launch(shells["a"], project, "--env", "GREETING=hello from a", "--env", "RUNYARD_LAB_IP=0.0.0.0", "--",
               "python", "probe.py")
    b = launch(shells["b"], project, "--env", "GREETING=hello from b", "--", "python", "probe.py")
    seen = {}
    for name, number in (("a", a), ("b", b)):
        assert wait_status(env, project, number, TERMINAL) == "finished"
        seen[name] = json.loads(next(text for stream, text in log_of(env, project, number)
                                     if stream == "stdout" and text.startswith("{")))
    cli(env, project, "stop", str(blocker))
    for name in ("a", "b"):
        venv = shells[name]["VIRTUAL_ENV"]
        assert seen[name]["python"] == f"{venv}/bin/python", f"run {name} ran {seen[name]['python']}"
        run_env = seen[name]["env"]
        assert run_env["PATH"] == shells[name]["PATH"] and run_env["VIRTUAL_ENV"] == venv
        assert run_env["GREETING"] == f"hello from {name}"
        assert "ONLY_IN_THE_AGENTS_SHELL" not in run_env
        assert "RUNYARD_SLOTS" not in run_env  # the agent's own settings stay the agent's
        assert run_env["RUNYARD_LAB_IP"] == ""
    shown = cli(env, project, "show", str(a)).stdout
    assert f"    VIRTUAL_ENV={shells['a']['VIRTUAL_ENV']}" in shown and "    GREETING=hello from a" in shown
    launch_json = json.loads(cli(env, project, "show", str(a), "--json").stdout)["launch"]
    assert launch_json["environment"]["PATH"] == shells["a"]["PATH"]


def test_a_param_reaches_the_command_in_the_variable_run_help_names(project: Path, env: dict[str, str]) -> None:
    import re

    text = " ".join(cli(env, project, "run", "--help").stdout.split())
    example = re.search(r"--param (\w+)=(\S+) sets (RUNYARD_PARAM_\w+)", text)
    assert example, f"`runyard run --help` shows no --param example naming its variable: {text}"
    key, value, variable = example.groups()
    (project / "train.py").write_text(f"import os\nprint('value:', os.environ.get({variable!r}))\n"
                                      "print('token:', os.environ.get('HF_TOKEN'))\n")
    # `--env NAME` passes this shell's value, as docker run -e NAME does.
    number = launch({**env, "HF_TOKEN": "hf_123"}, project, "--param", f"{key}={value}", "--env", "HF_TOKEN",
                    "--", "python", "train.py")
    assert wait_status(env, project, number, TERMINAL) == "finished"
    assert ("stdout", f"value: {value}") in log_of(env, project, number)
    assert ("stdout", "token: hf_123") in log_of(env, project, number)
    unset = cli(env, project, "run", "--env", "NOT_SET_ANYWHERE_42", "--", "true", check=False)
    assert unset.returncode == 2 and "NOT_SET_ANYWHERE_42" in unset.stderr
    missing = launch({**env, "PATH": "/usr/bin:/bin"}, project, "--", "no-such-program-42")
    assert wait_status(env, project, missing, TERMINAL) == "failed"
    api = api_of(env, project)
    message = api.run(missing).status_message or ""
    api.close()
    assert message == "command not found: no-such-program-42"
    assert ("system", "command not found: no-such-program-42 (not on the run's PATH, /usr/bin:/bin: the PATH of "
            "the shell that submitted it, unless --env PATH=... gave another)") in log_of(env, project, missing)
