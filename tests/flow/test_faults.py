"""The data path off the happy path, with real processes and files: poison records, power cuts, a
home full of finished runs, a big backlog, kills on a busy machine, a full disk."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
from tests.flow.test_execution import wait_for

from runyard.api import Api
from runyard.config import resolve
from runyard.ingest import quarantine, tailer
from runyard.ingest.sink import StoreSink
from runyard.ingest.tailer import Tailer
from runyard.spool import acks
from runyard.spool.rundir import TARGET_FILE, run_dirs, target_key
from runyard.store.home import open_store

RUNYARD = [sys.executable, "-m", "runyard.cli.main"]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")}
    return {**keep, "RUNYARD_HOME": str(tmp_path / "home"), "RUNYARD_SYSTEM_INTERVAL": "0"}


def cli(env: dict[str, str], *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*RUNYARD, *args], env=env, capture_output=True, text=True, timeout=120, cwd=cwd)


def script(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


@contextlib.contextmanager
def no_agent(env: dict[str, str], tmp_path: Path) -> Iterator[None]:
    """Hold the home's agent lock, so that no agent starts: ingest is this test's alone."""
    from runyard.agent import stop_agents
    from runyard.sdk.agent_launch import agent_lock_path

    settings = resolve(environ=env, cwd=tmp_path)
    path = agent_lock_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    stop_agents(settings.home)  # one that is running finishes what it was doing and leaves
    with path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def format_1_spool(directory: Path, run_id: str, writer: str, items: list[list[Any]], target: str) -> None:
    """A spool as runyard before format 2 wrote it (what a run logged with an older SDK left behind),
    built byte by byte: header, then u32 length | u32 crc32 | msgpack batch of flat items."""
    directory.mkdir(parents=True)
    (directory / TARGET_FILE).write_text(target)
    meta = msgpack.packb({"run_id": run_id, "writer": writer, "index": 0})
    data = bytearray(b"RYSPOOL\x01" + struct.pack("<I", len(meta)) + meta)
    for batch in items:
        payload = msgpack.packb(batch, use_bin_type=True)
        data += struct.pack("<II", len(payload), zlib.crc32(payload)) + payload
    (directory / f"{writer}-000000.seg").write_bytes(bytes(data))


def test_a_record_the_store_refuses_is_set_aside_and_every_command_still_works(tmp_path: Path,
                                                                               env: dict[str, str]) -> None:
    good = script(tmp_path, "good.py", """
        import runyard
        with runyard.init(project="p", name="good") as run:
            for i in range(100):
                run.log({"loss": 1.0 / (i + 1)})
    """)
    subprocess.run([sys.executable, str(good)], env=env, check=True, timeout=60)
    settings = resolve(environ=env, cwd=tmp_path)
    now = time.time()
    start = {"event": "start", "project": "p", "name": "poisoned", "config": {}, "labels": [], "notes": "",
             "command": ["train.py"], "host": "h", "environment": {}}
    lock = no_agent(env, tmp_path)  # the sync below is the one that meets the poison
    lock.__enter__()
    format_1_spool(settings.spool_dir / "01BX5ZZKBKACTAV9WEVGEMMVRZ", "01BX5ZZKBKACTAV9WEVGEMMVRZ", "old1", [
        [[0, "e", now, start], {"a": 1.0}, 1, now, 0],
        [{"a": 1.0, 5: 2.0}, 2, now, 1],  # what `run.log({"a": 1, 5: 2.0})` let through
        [{"a": "high"}, 3, now, 2, [4, "l", now, "stdout"]],  # a string value; a log line cut short
        [{"a": 3.0}, 5, now, 3, [6, "l", now, "stdout", "still here"], [7, "e", now, {"event": "end",
                                                                                   "status": "finished"}]],
    ], target_key(settings))
    synced = cli(env, "sync", "--json", cwd=tmp_path)
    lock.__exit__(None, None, None)
    assert synced.returncode == 0, synced.stderr
    report = json.loads(synced.stdout)
    assert report["quarantine"]["records"] == 3
    assert [w["quarantined"] for w in report["writers"] if w["writer"] == "old1"] == [3]
    for command in (["ls"], ["show", "poisoned"], ["show", "good"], ["logs", "poisoned"], ["sync"]):
        result = cli(env, *command, cwd=tmp_path)
        assert result.returncode == 0 and "Traceback" not in result.stderr, (command, result.stderr)
    assert "3 record(s) in quarantine" in cli(env, "sync", cwd=tmp_path).stdout
    doctor = json.loads(cli(env, "doctor", "--json", cwd=tmp_path).stdout)
    assert next(c["detail"] for c in doctor["checks"] if c["name"] == "quarantine").startswith("3 record(s)")
    api = Api(resolve(environ=env, cwd=tmp_path))
    poisoned = api.run("poisoned")
    assert poisoned.status.value == "finished"
    assert poisoned.history("a").step.tolist() == [0, 3]
    assert [line.text for line in poisoned.logs()] == ["still here"]
    assert len(api.run("good").history("loss")) == 100
    api.close()
    reasons = sorted(q.reason for q in quarantine.listing(settings.spool_dir))
    # Each reason names what is wrong (the short record said only IndexError before ingest checked it).
    assert [r.split(":")[0] for r in reasons] == ["InvalidArgument"] * 3, reasons
    assert "metric name 5 is not a string" in "".join(reasons)
    assert "a value of metrics ['a'] is not a number" in "".join(reasons)
    assert "IndexError" not in "".join(reasons)


def test_a_power_cut_that_loses_the_last_commits_loses_no_point_and_no_final_state(tmp_path: Path,
                                                                                  env: dict[str, str]) -> None:
    # SQLite runs with synchronous=NORMAL: a power cut may lose the last commits while the ack files,
    # fsynced, say they were made. Simulated: a copy of the database taken before the last commits
    # is put back after them.
    with no_agent(env, tmp_path):  # ingest is driven by this test alone
        settings = resolve(environ=env, cwd=tmp_path)
        opened = open_store(settings)
        ingest = Tailer(StoreSink(opened.store, opened.artifacts), settings.spool_dir, None)
        first = script(tmp_path, "first.py", """
            import runyard
            with runyard.init(project="p", name="first") as run:
                for i in range(1000):
                    run.log({"x": float(i)})
        """)
        env_no_agent = {**env, "RUNYARD_FINISH_TIMEOUT": "0"}
        subprocess.run([sys.executable, str(first)], env=env_no_agent, check=True, timeout=60)
        ingest.poll()  # "first" is complete: retired, its commits forced to disk first
        live = script(tmp_path, "live.py", """
            import sys, runyard
            run = runyard.init(project="p", name="second")
            for i in range(500):
                run.log({"x": float(i)})
            print("half", flush=True)
            sys.stdin.readline()
            for i in range(500, 1000):
                run.log({"x": float(i)})
            run.finish(wait=False)
        """)
        child = subprocess.Popen([sys.executable, str(live)], env=env_no_agent, stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True)
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline().strip() == "half"
        ingest.poll()
        database = Path(opened.store.engine.url.database or "")
        opened.store.engine.dispose()
        backup = tmp_path / "backup"
        backup.mkdir()
        for path in database.parent.glob(database.name + "*"):
            shutil.copy2(path, backup / path.name)  # the disk as a power cut at this moment leaves it
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.wait(timeout=60) == 0
        # The cut comes before this pass could force its commits to disk and retire the run, after
        # the ack files already said "complete".
        ingest.retire = False
        ingest.poll()
        assert opened.store.get_run("second").status.value == "finished"
        opened.close()
        for path in database.parent.glob(database.name + "*"):
            path.unlink()
        for path in backup.iterdir():
            shutil.copy2(path, database.parent / path.name)
        reopened = open_store(settings)
        assert reopened.store.get_run("second").status.value == "running"  # the cut lost the end
        Tailer(StoreSink(reopened.store, reopened.artifacts), settings.spool_dir, None).poll()
        for name in ("first", "second"):
            run = reopened.store.get_run(name)
            points = reopened.store.history(run.number, "x")
            assert run.status.value == "finished", name
            assert points.steps.tolist() == list(range(1000))
            assert points.values.tolist() == [float(i) for i in range(1000)]
        reopened.close()


def test_a_pass_reads_nothing_of_the_runs_that_finished_before_it(tmp_path: Path, env: dict[str, str],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    many = script(tmp_path, "many.py", """
        import runyard
        for n in range(60):
            with runyard.init(project="p", name=f"r{n}") as run:
                run.log({"x": float(n)})
    """)
    subprocess.run([sys.executable, str(many)], env=env, check=True, timeout=120)
    settings = resolve(environ=env, cwd=tmp_path)
    opened = open_store(settings)
    tail = Tailer(StoreSink(opened.store, opened.artifacts), settings.spool_dir, None)
    tail.poll()
    assert run_dirs(settings.spool_dir) == []  # every finished run's spool retired
    assert len(list((settings.spool_dir / "retired").iterdir())) == 60
    reads: list[Path] = []
    real_read_ack = acks.read_ack
    monkeypatch.setattr(tailer, "read_ack", lambda d, w: reads.append(d) or real_read_ack(d, w))
    for fresh in (tail, Tailer(StoreSink(opened.store, opened.artifacts), settings.spool_dir, None)):
        report = fresh.poll()
        assert report.writers == [] and reads == []  # nothing of the 60 finished runs is opened
    assert [opened.store.history(opened.store.get_run(f"r{n}").number, "x").values.tolist() for n in (0, 59)] == [
        [0.0], [59.0]]
    opened.close()


def test_catching_up_a_big_backlog_holds_a_bounded_number_of_records(tmp_path: Path, env: dict[str, str]) -> None:
    # 1,500,000 records (about 60 MiB of spool) wait while the writer still lives; one pass takes
    # them all in, in a process of its own whose memory is measured, never holding more than a few
    # chunks of decoded records at once.
    backlog = script(tmp_path, "backlog.py", """
        import sys, runyard
        run = runyard.init(project="p", name="backlog")
        for i in range(1_500_000):
            run.log({"loss": 1.0, "acc": 0.5, "step_time": 0.1})
        print("logged", flush=True)
        sys.stdin.readline()
    """)
    catch_up = script(tmp_path, "catch_up.py", """
        import json, resource
        from runyard.config import resolve
        from runyard.ingest.sink import StoreSink
        from runyard.ingest.tailer import Tailer
        from runyard.store.home import open_store
        settings = resolve()
        opened = open_store(settings)
        tailer = Tailer(StoreSink(opened.store, opened.artifacts), settings.spool_dir, None)
        import numpy  # loaded before the baseline, as the store and the tailer are
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        report = tailer.poll()
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({"records": report.records, "grew_mb": (after - before) / 1024}))
    """)
    with no_agent(env, tmp_path):  # the measured pass is the one that catches up
        child = subprocess.Popen([sys.executable, str(backlog)], env={**env, "RUNYARD_FINISH_TIMEOUT": "0"},
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert child.stdout is not None and child.stdin is not None
        try:
            assert child.stdout.readline().strip() == "logged"
            out = subprocess.run([sys.executable, str(catch_up)], env=env, capture_output=True, text=True,
                                 timeout=300, check=True)
        finally:
            child.stdin.write("done\n")
            child.stdin.flush()
            child.wait(timeout=60)
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    assert figures["records"] >= 1_500_000  # all of it in one pass
    assert figures["grew_mb"] < 150, figures  # reading it whole decoded ~60 MiB into gigabytes of objects
    api = Api(resolve(environ=env, cwd=tmp_path))
    assert len(api.run("backlog").history("acc")) == 1_500_000
    api.close()


KILLED = """
    import sys, time, numpy as np, runyard
    progress = np.lib.format.open_memmap(sys.argv[1], mode="w+", dtype=np.int64, shape=(1,))
    run = runyard.init(project="p", name="killed")
    print("ready", flush=True)
    i = 0
    log = run.log
    while True:
        log({"loss": 1.0}, i)
        progress[0] = i + 1  # written after log() returned: what the kill may not lose
        i += 1
"""


@pytest.mark.parametrize("load", ["agent busy with other runs", "CPU hog", "I/O hog"])
def test_a_killed_process_keeps_every_record_whose_log_returned_on_a_busy_machine(
        tmp_path: Path, env: dict[str, str], load: str) -> None:
    hogs: list[subprocess.Popen[bytes]] = []
    if load == "agent busy with other runs":
        filler = script(tmp_path, "filler.py", """
            import sys, runyard
            run = runyard.init(project="fill", name=sys.argv[1])
            for i in range(600_000):
                run.log({"a": 1.0, "b": 2.0}, i)
            run.finish(wait=False)
        """)
        for n in range(2):
            subprocess.run([sys.executable, str(filler), f"f{n}"], env=env, check=True, timeout=120)
    elif load == "CPU hog":
        hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    else:
        hogs = [subprocess.Popen(["sh", "-c", f"while true; do dd if=/dev/zero of={tmp_path}/big bs=8M count=1 "
                                              "conv=fsync 2>/dev/null; done"])]
    progress = tmp_path / "progress.npy"
    path = script(tmp_path, "killed.py", KILLED)
    child = subprocess.Popen([sys.executable, str(path), str(progress)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        time.sleep(2.5)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    returned = int(np.load(progress, mmap_mode="r")[0])
    synced = cli(env, "sync", cwd=tmp_path)
    assert synced.returncode == 0, synced.stderr
    api = Api(resolve(environ=env, cwd=tmp_path))
    steps = api.run("killed").history("loss").step
    api.close()
    assert returned > 10_000
    # Every step whose log() returned is there (the one in flight at the kill may be too).
    assert steps.tolist()[:returned] == list(range(returned)) and steps.shape[0] <= returned + 1


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_a_full_disk_keeps_training_alive_says_what_is_at_risk_and_loses_nothing_once_space_returns(
        tmp_path: Path, env: dict[str, str]) -> None:
    spool = tmp_path / "small"
    spool.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(spool)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        (spool / "filler").write_bytes(b"\1" * ((16 << 20) - (512 << 10)))  # all but 512 KiB taken
        body = """
            import sys, runyard
            run = runyard.init(project="p", name="full")
            for i in range(200_000):
                run.log({"loss": 1.0 / (i + 1), "acc": 0.5})
                if i == 60_000:
                    print("full now", flush=True)
                    sys.stdin.readline()  # the test frees space here
            run.finish()
            print("finished", flush=True)
        """
        path = script(tmp_path, "full.py", body)
        run_env = {**env, "RUNYARD_QUEUE_LIMIT": "300000", "RUNYARD_FINISH_TIMEOUT": "20"}
        home_spool = resolve(environ=env, cwd=tmp_path).spool_dir
        home_spool.parent.mkdir(parents=True, exist_ok=True)
        home_spool.symlink_to(spool)  # the home's spool on the small disk, the database beside it
        child = subprocess.Popen([sys.executable, str(path)], env=run_env, stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert child.stdout is not None and child.stdin is not None and child.stderr is not None
        assert child.stdout.readline().strip() == "full now"
        synced = cli(env, "sync", cwd=tmp_path)  # with the spool's disk full: said in a line, not a traceback
        assert "Traceback" not in synced.stderr + synced.stdout
        (spool / "filler").unlink()
        child.stdin.write("go\n")
        child.stdin.flush()
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0 and "finished" in out, err
        assert "training continues" in err and "written again" in err and "lost" not in err.split("written again")[1]
        assert "safe" not in err
        wait_for(lambda: cli(env, "sync", cwd=tmp_path).returncode == 0, 60, "sync to succeed")
        api = Api(resolve(environ=env, cwd=tmp_path))
        run = api.run("full")
        steps = run.history("loss").step
        said = [line.text for line in run.logs(limit=100_000) if line.stream == "system"]
        api.close()
        assert steps.tolist() == list(range(200_000))
        assert any("training continues" in line for line in said) and any("written again" in line for line in said)
    finally:
        subprocess.run(["umount", "-l", str(spool)], check=False)


def test_runyard_ls_still_takes_in_what_a_dead_process_left(tmp_path: Path, env: dict[str, str]) -> None:
    # ls answers through the standard library when nothing waits; when a dead writer left records,
    # it ingests them first, as every command that opens the home does.
    died = script(tmp_path, "died.py", """
        import os, runyard
        run = runyard.init(project="p", name="died")
        for i in range(10):
            run.log({"x": float(i)})
        os._exit(1)
    """)
    with no_agent(env, tmp_path):
        subprocess.run([sys.executable, str(died)], env=env, timeout=60)
        listed = cli(env, "ls", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "died" in listed.stdout and "lost" in listed.stdout
    again = cli(env, "ls", "--status", "lost", cwd=tmp_path)  # nothing waits now: the fast path
    assert again.stdout.split("\n")[1].split()[1:4] == ["died", "p", "lost"]
