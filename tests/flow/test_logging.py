"""The logging pipeline with real processes: crash, kill, duplicate ingest, spill, system metrics."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from runyard.api import Api
from runyard.config import resolve
from runyard.ingest.sink import StoreSink
from runyard.ingest.tailer import Tailer
from runyard.spool.acks import SUFFIX as ACK_SUFFIX
from runyard.spool.rundir import run_dirs
from runyard.store.home import open_store


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")}
    return {**keep, "RUNYARD_HOME": str(tmp_path / "home"), "RUNYARD_STRICT": "1",
            "RUNYARD_SYSTEM_INTERVAL": "0"}


def script(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "train.py"
    path.write_text(textwrap.dedent(body))
    return path


def api_for(env: dict[str, str], tmp_path: Path) -> Api:
    return Api(resolve(environ=env, cwd=tmp_path))


def test_an_uncaught_exception_marks_the_run_failed_with_its_traceback(tmp_path: Path, env: dict[str, str]) -> None:
    path = script(tmp_path, """
        import runyard
        run = runyard.init(project="p", name="crashes")
        for i in range(10):
            run.log({"loss": 1.0 / (i + 1)})
        raise ValueError("the data loader broke")
    """)
    result = subprocess.run([sys.executable, str(path)], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "the data loader broke" in result.stderr  # the user still sees it
    api = api_for(env, tmp_path)
    run = api.run("crashes")
    assert run.status.value == "failed"
    log = "\n".join(line.text for line in run.logs())
    assert "Traceback" in log and "ValueError: the data loader broke" in log
    assert run.history("loss").step.tolist() == list(range(10))
    api.close()


def test_a_script_that_ends_right_after_logging_without_finish_loses_nothing(tmp_path: Path,
                                                                             env: dict[str, str]) -> None:
    # finish() then runs from atexit, while the interpreter shuts down: it must not need an import.
    path = script(tmp_path, """
        import runyard
        run = runyard.init(project="p", name="short")
        for step in range(50):
            run.log({"loss": 1.0 / (step + 1)}, step=step)
    """)
    result = subprocess.run([sys.executable, str(path)], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    api = api_for(env, tmp_path)
    run = api.run("short")
    assert run.status.value == "finished" and run.history("loss").step.tolist() == list(range(50))
    api.close()


def test_sigkill_mid_logging_loses_no_complete_record(tmp_path: Path, env: dict[str, str]) -> None:
    progress = tmp_path / "progress.npy"
    path = script(tmp_path, f"""
        import time, numpy as np, runyard
        progress = np.lib.format.open_memmap({str(progress)!r}, mode="w+", dtype=np.float64, shape=(2,))
        run = runyard.init(project="p", name="killed")
        print("ready", flush=True)
        i = 0
        while True:
            run.log({{"loss": float(i), "acc": 0.5}}, step=i)
            progress[0], progress[1] = i, time.time()
            i += 1
    """)
    child = subprocess.Popen([sys.executable, str(path)], env={**env, "RUNYARD_CAPTURED": "1"},
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    time.sleep(1.5)
    last_step = int(np.load(progress, mmap_mode="r")[0])
    time.sleep(0.2)  # the acceptance bound: all logged 200 ms before the kill is in the kernel
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=10)
    sync = subprocess.run([sys.executable, "-m", "runyard.cli.main", "sync", "--json"], env=env,
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert sync.returncode == 0, sync.stderr
    api = api_for(env, tmp_path)
    run = api.run("killed")
    steps = run.history("loss").step
    assert steps.shape[0] > last_step and steps.tolist() == list(range(steps.shape[0]))  # a gapless prefix
    assert run.status.value == "lost" and "last heartbeat" in (run.status_message or "")
    api.close()


def test_ingesting_twice_changes_nothing(tmp_path: Path, env: dict[str, str]) -> None:
    path = script(tmp_path, """
        import runyard
        with runyard.init(project="p", name="twice") as run:
            for i in range(3000):
                run.log({"loss": float(i)})
            run.note("once")
    """)
    subprocess.run([sys.executable, str(path)], env=env, check=True, timeout=60)
    settings = resolve(environ=env, cwd=tmp_path)
    opened = open_store(settings)
    before = opened.store.get_run("twice")
    for directory in run_dirs(settings.spool_dir):  # forget every acknowledgement, read it all again
        for ack in directory.glob(f"*{ACK_SUFFIX}"):
            ack.unlink()
    report = Tailer(StoreSink(opened.store, opened.artifacts), settings.spool_dir, None).poll()
    assert report.records == 0  # every record was recognised as applied
    after = opened.store.get_run("twice")
    assert after == before and after.notes == "once"
    assert opened.store.list_series(after.number)[0].count == 3000
    opened.close()


def test_a_disk_that_syncs_slowly_costs_log_nothing_and_holds_no_record_in_memory(
        tmp_path: Path, env: dict[str, str]) -> None:
    # 5,000,000 points (1,250,000 calls of 4 metrics) while every fsync of the spool takes a second.
    path = script(tmp_path, """
        import json, time
        import runyard
        from runyard.spool import segment
        real_sync, real_close = segment.MappedSegment.sync, segment.MappedSegment.close
        def slow_sync(self):
            time.sleep(1.0)
            real_sync(self)
        def slow_close(self, sync=True):
            time.sleep(1.0 if sync else 0.0)
            real_close(self, sync)
        segment.MappedSegment.sync, segment.MappedSegment.close = slow_sync, slow_close
        run = runyard.init(project="p", name="slow-disk")
        calls = 1_250_000
        t0 = time.perf_counter()
        for i in range(calls):
            run.log({"a": 1.0, "b": 2.0, "c": 3.0, "d": float(i)})
        seconds = time.perf_counter() - t0
        writer = run._writer
        held = writer.peak_held
        # The process's own memory: the spool's pages in its mapping are the page cache (RSS counts
        # them, and the keeper faults in pages ahead, more of them when it runs late on a busy box).
        status = dict(line.split(":", 1) for line in open("/proc/self/status"))
        anon_mb = int(status["RssAnon"].split()[0]) / 1024
        run.finish()
        print(json.dumps({"held": held, "anon_mb": anon_mb, "seconds": seconds}))
    """)
    result = subprocess.run([sys.executable, str(path)], env={**env, "RUNYARD_FINISH_TIMEOUT": "300"},
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout.strip().splitlines()[-1])
    assert stats["held"] == 0  # every record went straight to the spool, whatever the disk did
    assert stats["anon_mb"] < 100  # the records are in the page cache, not in the process (its 1.25 M frames: ~160 MB)
    api = api_for(env, tmp_path)
    run = api.run("slow-disk")
    d = run.history("d")
    assert d.step.shape[0] == 1_250_000 and d.value[-1] == 1_249_999.0
    assert sum(s.count for s in run.metrics()) == 5_000_000
    api.close()


def test_runyard_run_id_attaches_to_an_existing_run(tmp_path: Path, env: dict[str, str]) -> None:
    from runyard.store.api import NewRun
    from runyard.types import RunStatus

    settings = resolve(environ=env, cwd=tmp_path)
    opened = open_store(settings)
    made = opened.store.create_run(NewRun(project="launched", name="queued-one", status=RunStatus.STARTING,
                                          config={"lr": 0.1}))
    opened.close()
    path = script(tmp_path, """
        import runyard
        run = runyard.init(project="ignored", config={"batch": 8})
        run.log({"loss": 0.5})
        run.finish()
    """)
    subprocess.run([sys.executable, str(path)], env={**env, "RUNYARD_RUN_ID": made.id}, check=True, timeout=60)
    api = api_for(env, tmp_path)
    run = api.run(made.number)
    assert run.config == {"lr": 0.1, "batch": 8} and run.project == "launched"
    assert run.status.value == "running"  # the supervisor, not the script, says how a launched run ends
    assert run.history("loss").value.tolist() == [0.5]
    assert len(api.runs()) == 1
    api.close()


def test_system_metrics_with_a_stand_in_nvml(tmp_path: Path, env: dict[str, str]) -> None:
    fake = tmp_path / "fakenvml"
    fake.mkdir()
    (fake / "pynvml.py").write_text(textwrap.dedent("""
        from types import SimpleNamespace
        NVML_TEMPERATURE_GPU = 0
        def nvmlInit(): pass
        def nvmlShutdown(): pass
        def nvmlDeviceGetCount(): return 2
        def nvmlDeviceGetHandleByIndex(i): return i
        def nvmlDeviceGetUtilizationRates(h): return SimpleNamespace(gpu=40 + h, memory=10)
        def nvmlDeviceGetMemoryInfo(h): return SimpleNamespace(used=4 << 30, total=16 << 30)
        def nvmlDeviceGetPowerUsage(h): return 150_000
        def nvmlDeviceGetTemperature(h, sensor): return 61
    """))
    path = script(tmp_path, """
        import time, runyard
        with runyard.init(project="p", name="sampled") as run:
            x = 0
            deadline = time.time() + 0.8
            while time.time() < deadline:
                x += 1
    """)
    subprocess.run([sys.executable, str(path)], check=True, timeout=60,
                   env={**env, "RUNYARD_SYSTEM_INTERVAL": "0.2", "PYTHONPATH": str(fake)})
    api = api_for(env, tmp_path)
    run = api.run("sampled")
    keys = {s.key for s in run.metrics()}
    assert {"system/cpu_percent", "system/rss_mb", "system/memory_percent", "system/gpu0/utilization",
            "system/gpu1/utilization", "system/gpu0/memory_percent", "system/gpu1/power_w",
            "system/gpu1/temperature_c"} <= keys
    assert run.history("system/gpu1/utilization").value[0] == 41.0
    assert run.history("system/gpu0/memory_percent").value[0] == 25.0
    assert run.history("system/gpu0/power_w").value[0] == 150.0
    assert run.history("system/cpu_percent").step.shape[0] >= 3
    assert run.history("system/rss_mb").value[-1] > 5
    assert "system/cpu_percent" not in run.summary  # hardware samples are not the run's results
    api.close()


def test_sampling_off_records_no_system_metrics(tmp_path: Path, env: dict[str, str]) -> None:
    path = script(tmp_path, """
        import runyard
        with runyard.init(project="p", name="quiet") as run:
            run.log({"loss": 1.0})
    """)
    subprocess.run([sys.executable, str(path)], env=env, check=True, timeout=60)
    api = api_for(env, tmp_path)
    assert [s.key for s in api.run("quiet").metrics()] == ["loss"]
    api.close()
