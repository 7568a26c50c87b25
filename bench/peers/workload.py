"""One library, one measurement, in a fresh interpreter; prints one JSON line.

    python workload.py LIBRARY MODE DIR [STEPS]

LIBRARY: runyard | mlflow-sync | mlflow-async | wandb-offline | aim | tensorboardX
MODE:    latency    log() per call (p50/p99/p99.9), then finish() and (runyard) the read-back
         loop       a training loop of ~100 µs of numpy work per step: phases of at least a second
                    with and without logging, alternated, repeated
         kill       log at full speed, recording progress, until killed (the parent kills it)
         recover    after a kill: which steps can be read back
         tensor     (runyard) log() of a stand-in tensor whose .item() takes 1 ms
         sustained  (runyard) log flat out for SECONDS, then leave (the parent times the read-back)

Run with each library's own virtual environment; this file imports nothing but numpy and the
library under test. The workload is the same for every library: each step logs a dict of 4 floats
with its step.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

KEYS = ("loss", "accuracy", "lr", "grad_norm")
BUDGET_S = float(os.environ.get("BENCH_BUDGET_S", "60"))
#: How long finish() may take before the measurement gives up on it (MLflow's asynchronous
#: queue can take many minutes to drain).
FINISH_BUDGET_S = float(os.environ.get("BENCH_FINISH_BUDGET_S", "60"))
#: Unique per process, so that several benchmark processes can share one home.
RUN_NAME = f"bench-{os.getpid()}"


def adapter(library: str, directory: str) -> tuple[Callable[[dict[str, float], int], Any], Callable[[], Any]]:
    """(log(metrics, step), finish()) for a library, logging into ``directory``."""
    if library == "no-op":
        def log_nothing(m: dict[str, float], step: int) -> None:
            return None

        return log_nothing, lambda: None
    if library in ("runyard", "runyard-inproc", "runyard-before"):
        import runyard

        if library == "runyard-inproc":
            _ingest_in_this_process()
        run = runyard.init(project="bench", name=RUN_NAME)
        return run.log, run.finish  # log(metrics, step) is its signature: no wrapper call to time
    if library in ("mlflow-sync", "mlflow-async"):
        import mlflow

        mlflow.set_tracking_uri(f"sqlite:///{directory}/mlflow.db")
        mlflow.set_experiment("bench")
        mlflow.start_run(run_name="bench")
        synchronous = library == "mlflow-sync"

        def log_mlflow(m: dict[str, float], step: int) -> None:
            mlflow.log_metrics(m, step=step, synchronous=synchronous)

        def finish_mlflow() -> None:
            if not synchronous:
                from mlflow.tracking.fluent import flush_async_logging

                flush_async_logging()
            mlflow.end_run()

        return log_mlflow, finish_mlflow
    if library == "wandb-offline":
        os.environ.update({"WANDB_MODE": "offline", "WANDB_DIR": directory, "WANDB_SILENT": "true",
                           "WANDB_CONSOLE": "off"})
        import wandb

        run = wandb.init(project="bench", name="bench")
        return (lambda m, step: run.log(m, step=step)), run.finish
    if library == "aim":
        from aim import Run

        aim_run = Run(repo=directory, experiment="bench")

        def log_aim(m: dict[str, float], step: int) -> None:
            for key, value in m.items():
                aim_run.track(value, name=key, step=step)

        return log_aim, aim_run.close
    if library == "tensorboardX":
        from tensorboardX import SummaryWriter

        writer = SummaryWriter(directory)

        def log_tb(m: dict[str, float], step: int) -> None:
            for key, value in m.items():
                writer.add_scalar(key, value, step)

        return log_tb, writer.close
    raise SystemExit(f"unknown library {library}")


def _ingest_in_this_process() -> None:
    """The design alternative to the agent: ingest in a thread of the training process itself.

    Holds the agent's lock, so that init() finds an "agent" and starts none, and runs the same
    tailer in a thread. For the benchmark's comparison only.
    """
    import fcntl
    import threading

    from runyard.config import resolve
    from runyard.ingest.sink import StoreSink
    from runyard.ingest.tailer import Tailer
    from runyard.sdk.agent_launch import agent_lock_path
    from runyard.spool.rundir import target_key
    from runyard.store.home import open_store

    settings = resolve()
    path = agent_lock_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = open(path, "a")  # noqa: SIM115 - held for the life of the process
    # If another benchmark process holds it, fine: the point is only that no agent starts.
    with contextlib.suppress(BlockingIOError):
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    _ingest_in_this_process.lock = lock  # type: ignore[attr-defined]
    opened = open_store(settings)
    tailer = Tailer(StoreSink(opened.store, opened.artifacts), settings.spool_dir, target_key(settings))

    def loop() -> None:
        while True:
            current = runyard.current_run()
            if current is not None:
                tailer.poll(run_ids=[current.id])
            time.sleep(0.05)

    import runyard


    threading.Thread(target=loop, daemon=True).start()


def bounded_finish(finish: Callable[[], Any]) -> float | None:
    """Seconds finish() took, or None if it did not return within FINISH_BUDGET_S."""
    import threading

    t0 = time.perf_counter()
    thread = threading.Thread(target=finish, daemon=True)
    thread.start()
    thread.join(FINISH_BUDGET_S)
    return None if thread.is_alive() else time.perf_counter() - t0


def emit(result: dict[str, Any]) -> None:
    """Print the result and leave at once, even if a peer's finish() is still draining."""
    print(json.dumps(result), flush=True)
    os._exit(0)


def metrics(i: int) -> dict[str, float]:
    return {"loss": 1.0 / (i + 1), "accuracy": i * 1e-5, "lr": 3e-4, "grad_norm": float(i % 13)}


def machine_baseline(steps: int) -> float:
    """p50 in µs of the least a logging call can do (copy the dict, append it to a deque), timed
    the same way: how fast this machine is right now, to read the other figures against."""
    from collections import deque

    append = deque(maxlen=10_000).append
    clock = time.perf_counter_ns
    samples = np.zeros(steps, np.int64)
    prepared = [metrics(i) for i in range(1000)]

    def log(m: dict[str, float], step: int) -> None:
        append(m.copy())

    for i in range(steps):
        m = prepared[i % 1000]
        t0 = clock()
        log(m, i)
        samples[i] = clock() - t0
    return float(np.percentile(samples, 50)) / 1000


def latency(library: str, directory: str, steps: int) -> dict[str, Any]:
    baseline = machine_baseline(steps)
    log, finish = adapter(library, directory)
    clock = time.perf_counter_ns
    samples = np.zeros(steps, np.int64)
    prepared = [metrics(i) for i in range(1000)]
    deadline = time.monotonic() + BUDGET_S
    done = 0
    for i in range(steps):
        m = prepared[i % 1000]
        t0 = clock()
        log(m, i)
        samples[i] = clock() - t0
        done = i + 1
        if i % 1000 == 999 and time.monotonic() > deadline:
            break
    samples = samples[:done]
    overhead = float(np.median([-(clock() - clock()) for _ in range(1000)]))
    finish_s = bounded_finish(finish)
    out: dict[str, Any] = {
        "steps": done,
        "p50_us": float(np.percentile(samples, 50)) / 1000,
        "p99_us": float(np.percentile(samples, 99)) / 1000,
        "p999_us": float(np.percentile(samples, 99.9)) / 1000,
        "timer_overhead_us": overhead / 1000,
        "baseline_p50_us": baseline,
        "finish_s": finish_s,
    }
    if library.startswith("runyard") and finish_s is not None:
        out["readable_s"] = finish_s + readback_runyard(done)
    return out


def readback_runyard(steps: int) -> float:
    """Seconds after finish() returned until every point reads back (0 when finish() waited for it)."""
    import runyard

    t0 = time.perf_counter()
    api = runyard.Api(catch_up=False)
    run = api.run(RUN_NAME)
    while True:
        counts = [run.history(k).step.shape[0] for k in KEYS]
        if counts == [steps] * 4:
            return time.perf_counter() - t0
        if time.perf_counter() - t0 > 60:
            raise SystemExit(f"only {counts} of {steps} points readable after 60 s")
        time.sleep(0.01)


def calibrate() -> Callable[[], None]:
    """A step of numpy work taking about 100 µs on this machine: as many 64x64 matrix products as
    take that long at the fastest pace measured. (Until 2026-12-01 the pace was the mean over the
    first calls: a child started while the agent was still busy with the last measurement's records
    measured a slow pace and chose a step of ~20 µs, five times shorter, which made any logging cost
    look five times bigger.)"""
    x = np.random.default_rng(0).normal(size=(64, 64))
    for _ in range(500):  # warm: the BLAS library's threads and buffers exist
        x @ x
    fastest = float("inf")
    for _ in range(30):  # other work only ever makes a batch slower: its fastest is the machine's pace
        t0 = time.perf_counter()
        for _ in range(50):
            x @ x
        fastest = min(fastest, (time.perf_counter() - t0) / 50)
    reps = max(1, round(100e-6 / fastest))

    def work() -> None:
        for _ in range(reps):
            x @ x

    return work


def background_cpu_s() -> float:
    """CPU seconds of this process's threads other than the calling (training) one: the logger's
    own threads (runyard's keeper and fsync; the old writer). Call it from the main thread."""
    import resource

    process, thread = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_THREAD)
    return (process.ru_utime + process.ru_stime) - (thread.ru_utime + thread.ru_stime)


#: Each phase of the loop lasts at least this long: ten times the longest interval at which a
#: logger does background work (runyard's old writer flushed every 100 ms), so that the work a
#: phase causes lands on that phase.
PHASE_S = 1.0


def loop(library: str, directory: str, steps: int) -> dict[str, Any]:
    """Phases of training steps, alternated: bare (the step alone), logged (the step, computing
    the 4 values and log()), and values only (the step and computing the values). The headline is
    logged / bare, per repetition: computing the values counts as logging, as a user comparing
    "with runyard" against "without" would count it. ``steps`` bounds the logged steps in all.
    """
    work = calibrate()
    t0 = time.perf_counter()
    for _ in range(200):
        work()
    per_step = (time.perf_counter() - t0) / 200
    phase = max(1000, int(PHASE_S / per_step))
    reps = max(3, steps // phase)
    log, finish = adapter(library, directory)
    ratios, values_ratios = [], []
    bare_total = logged_total = 0.0
    deadline = time.monotonic() + 4 * BUDGET_S
    cpu0 = background_cpu_s()
    done = 0
    for rep in range(reps):
        order = ("bare", "logged", "values") if rep % 2 == 0 else ("values", "logged", "bare")
        spent: dict[str, float] = {}
        for kind in order:
            start = done
            t0 = time.perf_counter()
            if kind == "bare":
                for _ in range(phase):
                    work()
            elif kind == "values":
                for i in range(start, start + phase):
                    work()
                    metrics(i)
            else:
                for i in range(start, start + phase):
                    work()
                    log(metrics(i), i)
                done += phase
            spent[kind] = time.perf_counter() - t0
        ratios.append(spent["logged"] / spent["bare"])
        values_ratios.append(spent["logged"] / spent["values"])
        bare_total += spent["bare"]
        logged_total += spent["logged"]
        if time.monotonic() > deadline:
            break
    writer_cpu = background_cpu_s() - cpu0
    bounded_finish(finish)
    return {"steps": done, "phase_steps": phase, "reps": len(ratios),
            "step_us": bare_total / (phase * len(ratios)) * 1e6,
            "slowdown": statistics.median(ratios), "slowdown_min": min(ratios), "slowdown_max": max(ratios),
            "slowdown_values_free": statistics.median(values_ratios), "ratios": ratios,
            "overall": logged_total / bare_total,
            "writer_cpu_s_per_m_points": writer_cpu / (done * len(KEYS)) * 1e6 if done else None}


def kill_child(library: str, directory: str, progress_path: str) -> None:
    """Log at full speed, storing each step's wall time where the parent can read it after the kill."""
    progress = np.lib.format.open_memmap(progress_path, mode="w+", dtype=np.float64, shape=(20_000_000,))
    log, _ = adapter(library, directory)
    print("ready", flush=True)
    now = time.time
    i = 0
    while True:
        log(metrics(i), i)
        progress[i] = now()
        i += 1


def recover(library: str, directory: str, progress_path: str, killed_at: float) -> dict[str, Any]:
    progress = np.load(progress_path, mmap_mode="r")
    logged = int(np.count_nonzero(progress))  # progress[i] is written after log() returned for step i
    due = int(np.count_nonzero((progress > 0) & (progress < killed_at - 0.2)))
    if library.startswith("runyard"):
        import runyard

        api = runyard.Api()  # opening the home ingests what the killed process left in its spool
        run = api.runs(project="bench")[0]
        steps = run.history("loss").step
    elif library.startswith("mlflow"):
        import mlflow
        from mlflow.tracking import MlflowClient

        mlflow.set_tracking_uri(f"sqlite:///{directory}/mlflow.db")
        client = MlflowClient()
        run_id = client.search_runs([client.get_experiment_by_name("bench").experiment_id])[0].info.run_id
        steps = np.array(sorted(m.step for m in client.get_metric_history(run_id, "loss")))
    else:
        return {"logged": logged, "due": due, "recovered": None}
    return {"logged": logged, "due": due, "recovered": int(steps.shape[0]),
            "recovered_due": int(np.count_nonzero(steps < due)),
            "recovered_logged": int(np.count_nonzero(steps < logged))}


class StandInTensor:
    """A 0-d tensor as a GPU gives it: reading its value (.item()) waits 1 ms for the device."""

    def __init__(self, value: float) -> None:
        self.value = value

    def numel(self) -> int:
        return 1

    def detach(self) -> StandInTensor:
        return self

    def item(self) -> float:
        time.sleep(0.001)
        return self.value


def tensor(library: str, directory: str, steps: int) -> dict[str, Any]:
    import runyard

    run = runyard.init(project="bench", name=RUN_NAME)
    clock = time.perf_counter_ns
    samples = np.zeros(steps, np.int64)
    values = [StandInTensor(float(i)) for i in range(1000)]
    for i in range(steps):
        value = values[i % 1000]
        t0 = clock()
        run.log({"loss": value}, i)
        samples[i] = clock() - t0
    t0 = time.perf_counter()
    run.finish()
    return {"steps": steps, "p50_us": float(np.percentile(samples, 50)) / 1000,
            "p99_us": float(np.percentile(samples, 99)) / 1000, "finish_s": time.perf_counter() - t0}


def readable(steps: int, timeout: float) -> dict[str, Any]:
    """Wait until every key of the run has ``steps`` points in the store; when it happened."""
    import runyard

    api = runyard.Api(catch_up=False)
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(Exception):  # the run may not be in the store yet
            number = api.run(RUN_NAME_OF_SUSTAINED).number
            counts = {s.key: s.count for s in api.store.list_series(number)}
            if all(counts.get(k, 0) >= steps for k in KEYS):
                return {"at": time.time(), "counts": counts}
        if time.monotonic() > deadline:
            return {"at": None}
        time.sleep(0.02)


#: The sustained run's name: the read-back runs in another process, which cannot use its pid.
RUN_NAME_OF_SUSTAINED = "bench-sustained"


def sustained(library: str, directory: str, seconds: float) -> dict[str, Any]:
    """Log flat out for ``seconds``; the parent measures how soon it is all readable."""
    import runyard

    run = runyard.init(project="bench", name=RUN_NAME_OF_SUSTAINED)
    log = run.log
    start = time.time()
    end = start + seconds
    i = 0
    now = time.time
    while True:
        for _ in range(1000):
            log(metrics(i), i)
            i += 1
        if now() >= end:
            break
    logged_at = time.time()
    run.finish(wait=False)
    return {"steps": i, "points": i * len(KEYS), "start": start, "end": logged_at}


def main() -> None:
    library, mode, directory = sys.argv[1], sys.argv[2], sys.argv[3]
    if mode == "latency":
        emit(latency(library, directory, int(sys.argv[4])))
    elif mode == "loop":
        emit(loop(library, directory, int(sys.argv[4])))
    elif mode == "kill":
        kill_child(library, directory, sys.argv[4])
    elif mode == "recover":
        emit(recover(library, directory, sys.argv[4], float(sys.argv[5])))
    elif mode == "tensor":
        emit(tensor(library, directory, int(sys.argv[4])))
    elif mode == "sustained":
        emit(sustained(library, directory, float(sys.argv[4])))
    elif mode == "readable":
        emit(readable(int(sys.argv[4]), float(sys.argv[5])))


if __name__ == "__main__":
    main()
