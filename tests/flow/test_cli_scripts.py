"""Real scripts as they are, through the real CLI: logs that survive a server outage, JSON lines that
mix numbers and strings, reclaiming disk (gc, rm), comparing runs."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.flow.test_execution import TERMINAL, api_of, cli, env, launch, log_of, project, wait_status
from tests.unit.server.conftest import LiveServer, client_env
from tests.unit.server.conftest import live_server as live_server

__all__ = ["env", "live_server", "project"]  # fixtures, imported to be used here

pytestmark = pytest.mark.timeout(180)

SLOW_PRINTER = """\
import sys, time
for i in range(24):
    stream = sys.stderr if i % 3 == 0 else sys.stdout
    print(f"{'Warning' if i % 3 == 0 else 'line'} {i}", file=stream, flush=True)
    time.sleep(0.25)
sys.exit(3)
"""


def test_logs_print_the_runs_stderr_on_stdout_and_pick_a_stream(project: Path, env: dict[str, str]) -> None:
    # pauses between the lines: two pipes read by two threads keep no order between them
    (project / "noisy.py").write_text("import sys, time\nprint('out 1')\ntime.sleep(0.2)\n"
                                      "print('Warning: careful', file=sys.stderr)\ntime.sleep(0.2)\nprint('out 2')\n")
    number = launch(env, project, "--", "python", "noisy.py")
    assert wait_status(env, project, number, TERMINAL) == "finished"
    every = cli(env, project, "logs", str(number))
    texts = every.stdout.splitlines()
    assert [t for t in texts if not t.startswith("[runyard]")] == ["out 1", "Warning: careful", "out 2"]
    assert every.stderr == ""  # `runyard logs 2 | grep Warning` finds it
    assert cli(env, project, "logs", str(number), "--stream", "stderr").stdout == "Warning: careful\n"
    assert cli(env, project, "logs", str(number), "--stream", "stdout").stdout == "out 1\nout 2\n"
    system = cli(env, project, "logs", str(number), "--stream", "system").stdout.splitlines()
    assert system and all(t.startswith("[runyard] ") for t in system)
    assert cli(env, project, "logs", str(number), "--stream", "stderr", "--tail", "1").stdout == "Warning: careful\n"
    bad = cli(env, project, "logs", str(number), "--stream", "both", check=False)
    assert bad.returncode == 2 and "both" in bad.stderr


def test_logs_piped_into_head_stop_quietly_and_tail_0_prints_nothing(project: Path, env: dict[str, str]) -> None:
    (project / "many.py").write_text("for i in range(30000):\n    print('line', i)\n")
    number = launch(env, project, "--", "python", "many.py")
    assert wait_status(env, project, number, TERMINAL) == "finished"
    piped = subprocess.run(["sh", "-c", f"{sys.executable} -m runyard.cli.main logs {number} | head -2"],
                           env=env, cwd=project, capture_output=True, text=True, timeout=60)
    assert len(piped.stdout.splitlines()) == 2
    assert piped.stderr == ""  # not "runyard: error: Broken pipe"
    assert cli(env, project, "logs", str(number), "--tail", "0").stdout == ""


@pytest.mark.engines("sqlite")
def test_logs_follow_waits_through_a_server_outage_and_prints_every_line_once(
        live_server: LiveServer, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "slow.py").write_text(SLOW_PRINTER)
    env = client_env(tmp_path / "laptop", live_server.url)
    queued = cli(env, work, "run", "--json", "--", "python", "slow.py")
    number = json.loads(queued.stdout)["number"]
    follower = subprocess.Popen([sys.executable, "-m", "runyard.cli.main", "logs", "-f", str(number)], env=env,
                                cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert follower.stdout is not None
    seen = [follower.stdout.readline() for _ in range(3)]  # the run has started printing
    assert all(seen), seen
    live_server.kill()  # the run goes on (its agent is not the server) while nothing answers
    time.sleep(2.0)
    live_server.start()
    out, err = follower.communicate(timeout=120)
    printed = [line for line in ("".join(seen) + out).splitlines() if not line.startswith("[runyard]")]
    expected = [f"{'Warning' if i % 3 == 0 else 'line'} {i}" for i in range(24)]
    assert printed == expected, err
    assert err.count("reconnecting") == 1 and err.count("reconnected") == 1, err
    assert follower.returncode == 3, err


def test_json_lines_mixing_numbers_and_strings_keep_the_numbers_and_say_what_was_skipped(
        project: Path, env: dict[str, str]) -> None:
    (project / "mixed.py").write_text(
        "import json\n"
        "for i in range(3):\n"
        "    print(json.dumps({'phase': 'eval', 'acc': 0.5 + i / 10, 'ok': True, 'step': i}))\n"
        "print(json.dumps({'loss': float('nan')}))\n"
    )
    number = launch(env, project, "--", "python", "mixed.py")
    assert wait_status(env, project, number, TERMINAL) == "finished"
    api = api_of(env, project)
    try:
        run = api.run(number)
        assert run.history("acc").value.tolist() == [0.5, 0.6, 0.7] and run.history("acc").step.tolist() == [0, 1, 2]
    finally:
        api.close()
    system = [text for stream, text in log_of(env, project, number) if stream == "system"]
    skipped = [t for t in system if "not recorded as a metric" in t]
    assert len(skipped) == 2, skipped  # once per key, not once per line
    assert any("'phase'" in t and "a string" in t for t in skipped)
    assert any("'ok'" in t and "a boolean" in t for t in skipped)
    shown = json.loads(cli(env, project, "show", str(number), "--json").stdout)
    loss = next(m for m in shown["metrics"] if m["key"] == "loss")
    assert loss["last_value"] == "NaN"  # the documented form, not {"$float": "NaN"}
    assert shown["summary"].get("loss", "NaN") == "NaN"


def test_compare_and_ls_columns_show_params_and_summaries_side_by_side(project: Path, env: dict[str, str]) -> None:
    (project / "fit.py").write_text(
        "import json, os\n"
        "if os.environ['RUNYARD_PARAM_lr'] != '0.3':\n"
        "    print(json.dumps({'val/acc': float(os.environ['RUNYARD_PARAM_lr']) * 2}))\n")
    numbers = [launch(env, project, "--param", f"lr={lr}", "--param", "seed=1", "--", "python", "fit.py")
               for lr in ("0.1", "0.2", "0.3")]
    for number in numbers:
        assert wait_status(env, project, number, TERMINAL) == "finished"
    listed = cli(env, project, "ls", "--columns", "config.lr,summary.val/acc").stdout.splitlines()
    assert listed[0].split()[-2:] == ["config.lr", "summary.val/acc"]
    by_number = {line.split()[0]: line.split()[-2:] for line in listed[1:]}
    assert by_number == {str(numbers[0]): ["0.1", "0.2"], str(numbers[1]): ["0.2", "0.4"],
                         str(numbers[2]): ["0.3", "-"]}
    as_json = json.loads(cli(env, project, "ls", "--json", "--columns", "config.lr,summary.val/acc").stdout)
    assert {r["number"]: r["columns"] for r in as_json}[numbers[0]] == {"config.lr": 0.1, "summary.val/acc": 0.2}
    unknown = cli(env, project, "ls", "--columns", "metrics.loss", check=False)
    assert unknown.returncode == 2 and "metrics.loss" in unknown.stderr and "config.KEY" in unknown.stderr

    shown = cli(env, project, "compare", *map(str, numbers)).stdout
    lines = [line.split() for line in shown.splitlines()]
    assert ["lr", "0.1", "0.2", "0.3"] in lines and not any(line[:1] == ["seed"] for line in lines)
    assert ["val/acc", "0.2", "0.4", "-"] in lines
    assert any(line[:2] == ["seed", "1"] for line in
               (x.split() for x in cli(env, project, "compare", "--all", *map(str, numbers)).stdout.splitlines()))
    compared = json.loads(cli(env, project, "compare", "--json", str(numbers[0]), str(numbers[1])).stdout)
    assert compared["params"] == {"lr": [0.1, 0.2]} and compared["summary"] == {"val/acc": [0.2, 0.4]}
    one = cli(env, project, "compare", str(numbers[0]), check=False)
    assert one.returncode == 2 and "two runs" in one.stderr


def _object(env: dict[str, str], cwd: Path, data: bytes) -> Path:
    import hashlib

    from runyard.config import resolve

    sha = hashlib.sha256(data).hexdigest()
    return Path(resolve(environ=env, cwd=cwd).artifacts) / "objects" / sha[:2] / sha[2:]


def _age_everything(root: Path, seconds: float) -> None:
    import os

    for path in root.rglob("*"):
        if path.is_file():
            st = path.stat()
            os.utime(path, (st.st_atime - seconds, st.st_mtime - seconds))


def test_gc_frees_unreferenced_content_and_stale_environments_and_keeps_what_runs_need(
        project: Path, env: dict[str, str]) -> None:
    from runyard.config import resolve
    from runyard.store.disk_artifacts import DiskArtifacts

    model = b"weights" * 2000
    (project / "train.py").write_text(f"import os\nos.makedirs('outputs', exist_ok=True)\n"
                                      f"open('outputs/model.bin', 'wb').write({model!r})\n")
    number = launch(env, project, "--", "python", "train.py")
    assert wait_status(env, project, number, TERMINAL) == "finished"
    settings = resolve(environ=env, cwd=project)
    store = DiskArtifacts(settings.artifacts)
    orphan = b"nobody refers to this" * 100
    store.put_bytes(orphan)
    torn = Path(settings.artifacts) / "tmp" / "put-killed-writer"
    torn.write_bytes(b"half a checkpoint" * 100)  # its writer was killed before it was placed
    _age_everything(Path(settings.artifacts), 7200)  # old enough for gc, referenced or not
    fresh = b"written a moment ago" * 100
    store.put_bytes(fresh)  # a submission may be about to refer to it: kept
    writing = Path(settings.artifacts) / "tmp" / "put-still-writing"
    writing.write_bytes(b"a checkpoint on its way")
    envs = settings.home / "envs"
    for name, age_days in (("oldenv", 40), ("newenv", 1)):
        (envs / name / "lib").mkdir(parents=True)
        (envs / name / "lib" / "pkg.py").write_text("x = 1\n" * 100)
        marker = envs / name / ".runyard-ready"
        marker.write_text("ok\n")
        _age_everything(envs / name, age_days * 86400)

    dry = json.loads(cli(env, project, "gc", "--dry-run", "--json").stdout)
    assert dry["dry_run"] and dry["content"] == {"count": 1, "bytes": len(orphan)}
    assert dry["environments"]["count"] == 1 and dry["run_directories"]["count"] == 0
    assert dry["unfinished_uploads"] == {"count": 1, "bytes": torn.stat().st_size}
    assert _object(env, project, orphan).exists() and (envs / "oldenv").exists()  # a dry run deletes nothing

    done = json.loads(cli(env, project, "gc", "--json").stdout)
    assert done["content"] == {"count": 1, "bytes": len(orphan)} and done["environments"]["count"] == 1
    assert not _object(env, project, orphan).exists() and _object(env, project, fresh).exists()
    assert not (envs / "oldenv").exists() and (envs / "newenv").exists()
    assert done["unfinished_uploads"]["count"] == 1 and not torn.exists() and writing.exists()
    copied = project / "copy.bin"
    cli(env, project, "cp", f"{number}:outputs/model.bin", str(copied))
    assert copied.read_bytes() == model
    again = int(cli(env, project, "rerun", str(number)).stdout.split()[1])  # the snapshot is whole
    assert wait_status(env, project, again, TERMINAL) == "finished"

    run_dir = settings.home / "runs" / api_of(env, project).run(number).id
    assert run_dir.is_dir()
    kept = json.loads(cli(env, project, "gc", "--runs-older-than", "30d", "--json").stdout)
    assert kept["run_directories"]["count"] == 0 and run_dir.is_dir()
    text = cli(env, project, "gc", "--all-finished").stdout
    assert "freed:" in text and "run directories" in text and not run_dir.exists()
    bad = cli(env, project, "gc", "--runs-older-than", "soon", check=False)
    assert bad.returncode == 2 and "soon" in bad.stderr


def test_rm_deletes_a_finished_run_and_its_own_artifacts_but_refuses_a_running_one(
        project: Path, env: dict[str, str]) -> None:
    (project / "write.py").write_text(
        "import os, sys\nos.makedirs('outputs', exist_ok=True)\n"
        "open('outputs/shared.bin', 'wb').write(b'S' * 5000)\n"
        "if os.environ['RUNYARD_PARAM_which'] == 'a':\n"
        "    open('outputs/unique.bin', 'wb').write(b'A' * 5000)\n")
    a = launch(env, project, "--param", "which=a", "--", "python", "write.py")
    b = launch(env, project, "--param", "which=b", "--", "python", "write.py")
    running = launch(env, project, "--", "python", "-c", "import time; time.sleep(60)")
    for number in (a, b):
        assert wait_status(env, project, number, TERMINAL) == "finished"
    wait_status(env, project, running, {"running"})

    def rm(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "runyard.cli.main", "rm", *args], env=env, cwd=project,
                              capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)

    refused = rm("--yes", str(running))
    assert refused.returncode == 2 and f"runyard stop {running}" in refused.stderr
    no_tty = rm(str(a))
    assert no_tty.returncode == 2 and "--yes" in no_tty.stderr and f"deletes run {a} " in no_tty.stderr
    assert _object(env, project, b"A" * 5000).exists()

    done = rm("--yes", str(a))
    assert done.returncode == 0 and f"deleted run {a}" in done.stdout, done.stderr
    listed = {r["number"] for r in json.loads(cli(env, project, "ls", "--json").stdout)}
    assert a not in listed and {b, running} <= listed
    assert not _object(env, project, b"A" * 5000).exists()  # only run a had it
    assert _object(env, project, b"S" * 5000).exists()  # run b has it too
    cli(env, project, "cp", f"{b}:outputs/shared.bin", str(project / "shared.bin"))
    assert (project / "shared.bin").read_bytes() == b"S" * 5000
    again = int(cli(env, project, "rerun", str(b)).stdout.split()[1])  # the shared snapshot is kept
    cli(env, project, "stop", str(running))
    assert wait_status(env, project, again, TERMINAL) == "finished"
