"""Logging benchmark: runyard against its targets and against each peer it can run, same workload.

    python bench/logging.py                     # runyard, and every peer built by `make bench-peers`
    python bench/logging.py --before ../base/src # also runyard as another checkout has it ("before")
    python bench/logging.py --quick             # fewer steps: checks the benchmark itself runs
    python bench/logging.py --json F            # also write the figures as JSON

Workload for every library: each step logs a dict of 4 floats with its step (bench/peers/workload.py),
each measurement in a fresh interpreter; runyard's home exists already (as after any first use).

* log() latency: 100,000 calls, p50/p99/p99.9, then finish() and (runyard) the read-back.
* Loop slowdown: a training step of ~100 µs of numpy work. Phases of at least 1 s (five times the
  interval at which runyard's keeper thread works) alternate: the bare step; the step, computing the
  4 values and log(); the step and the values only. The headline is logged / bare per repetition
  (computing the values counts as logging: it is what a user compares), the median of 30
  repetitions with its spread; "values free" divides by the values-only phase instead. The "no-op"
  column is the same loop calling a logger that does nothing: what the call and the dict of values
  cost before any logging library does anything.
* CPU: runyard's own threads in the training process, in CPU seconds per million points logged
  during the loop; the agent's, per million points of the end-to-end run (enough volume that its
  start and idle passes do not count).
* SIGKILL: log at full speed, kill after 2 s; which of the steps whose log() returned (the child
  writes its progress after each call returns) are read back. Alone, and with the machine busy: the
  home's agent ingesting two earlier runs, two CPU-bound processes, a process writing 8 MB with fsync
  in a loop.
* Tensor (runyard): log() of a stand-in tensor whose .item() takes 1 ms (as a GPU sync would).
* End to end (runyard): one process logs flat out for 30 s; the points per second from the first
  log() to all of them readable through the read API, the lag after the last log(), and the agent's
  peak RSS (VmHWM).

Peers run from their own virtual environments (.venv-peers/<name>); a peer that does not finish
within the time budget (BENCH_BUDGET_S, default 60 s per measurement) is measured on the steps it did.
With --before SRC, "runyard-before" runs the same workload with SRC (another checkout's src/) first
on PYTHONPATH: both readings come from one run on one machine.
"""

from __future__ import annotations

# This folder holds logging.py (the name the issue gives the benchmark), which would shadow the
# standard library's logging module for any script run from here: take the folder off the path.
import sys
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]


import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from runyard.agent import stop_agents

ROOT = Path(__file__).resolve().parents[1]
WORKLOAD = ROOT / "bench" / "peers" / "workload.py"
PEERS = {
    "mlflow-sync": ("mlflow", "mlflow"),
    "mlflow-async": ("mlflow", "mlflow"),
    "wandb-offline": ("wandb", "wandb"),
    "aim": ("aim", "aim"),
    "tensorboardX": ("tensorboardX", "tensorboardX"),
}
RECOVERABLE = {"runyard", "runyard-before", "mlflow-sync", "mlflow-async"}
LOADS = ("alone", "agent busy", "CPU hog", "I/O hog")
#: A logger that does nothing, measured in the loop only: the floor any library's figure sits on.
NOOP = "no-op"
#: The loop logs this many times more steps than the latency test calls log(): 30 repetitions of
#: 1 s phases, since one repetition's ratio moves by several percent on a busy 2-core machine.
LOOP_STEPS_FACTOR = 3
#: Set by --before: the src/ directory "runyard-before" runs from.
BEFORE: Path | None = None


def python_for(library: str) -> Path | None:
    if library.startswith("runyard") or library == NOOP:
        return Path(sys.executable)
    venv = ROOT / ".venv-peers" / PEERS[library][0]
    python = venv / "bin" / "python"
    return python if (venv / ".installed").exists() else None


def child_env(home: Path, library: str = "runyard") -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNYARD_", "WANDB_", "MLFLOW_"))}
    env.update({"RUNYARD_HOME": str(home), "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
                "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "RUNYARD_SYSTEM_INTERVAL": "0"})
    env.pop("PYTHONPATH", None)
    if library == "runyard-before" and BEFORE is not None:
        env["PYTHONPATH"] = str(BEFORE)
    return env


def prepare_home(library: str, home: Path) -> None:
    """A runyard home that exists already, as on any machine where runyard has been used: the
    measurements are of logging, not of creating a database the first time."""
    if library.startswith("runyard"):
        subprocess.run([sys.executable, "-m", "runyard.cli.main", "doctor"], env=child_env(home, library),
                       check=True, capture_output=True)


def agent_pids(home: Path) -> list[int]:
    pids = []
    for lock in (home / "agents").glob("*.lock") if (home / "agents").is_dir() else []:
        with contextlib.suppress(ValueError, OSError):
            pid = int(lock.read_text().strip())
            if pid > 1 and Path(f"/proc/{pid}").exists():
                pids.append(pid)
    return pids


def cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


@contextlib.contextmanager
def workdir(library: str) -> Iterator[tuple[Path, dict[str, str]]]:
    with tempfile.TemporaryDirectory(prefix="runyard-bench-") as d:
        home = Path(d) / "home"
        prepare_home(library, home)
        try:
            yield Path(d), child_env(home, library)
        finally:
            stop_agents(home)


def run_workload(python: Path, library: str, mode: str, *args: str, timeout: float = 900) -> dict[str, Any]:
    with workdir(library) as (d, env):
        out = subprocess.run([str(python), str(WORKLOAD), library, mode, str(d), *args], env=env,
                             capture_output=True, text=True, timeout=timeout, cwd=d)
        if out.returncode != 0:
            return {"error": (out.stderr.strip().splitlines() or ["failed"])[-1][:120]}
        return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def import_ms(python: Path, module: str, repeat: int, env: dict[str, str] | None = None) -> float:
    def once(code: str) -> float:
        t0 = time.perf_counter()
        subprocess.run([str(python), "-c", code], check=True, capture_output=True, env=env)
        return time.perf_counter() - t0

    base, loaded = [], []
    for _ in range(repeat):  # interleaved, so that both see the same machine
        base.append(once("pass"))
        loaded.append(once(f"import {module}"))
    return (statistics.median(loaded) - statistics.median(base)) * 1000


FILLER = """
import sys, runyard
run = runyard.init(project="fill", name=sys.argv[1])
for i in range(int(sys.argv[2])):
    run.log({"a": 1.0, "b": 2.0}, i)
run.finish(wait=False)
"""


@contextlib.contextmanager
def load_of(kind: str, d: Path, env: dict[str, str], python: Path, quick: bool) -> Iterator[None]:
    """What else the machine is doing while a process is killed."""
    hogs: list[subprocess.Popen[bytes]] = []
    if kind == "agent busy":  # two earlier runs' spools for the home's agent to ingest meanwhile
        filler = d / "filler.py"
        filler.write_text(FILLER)
        for n in range(2):
            subprocess.run([str(python), str(filler), f"f{n}", "300000" if quick else "2000000"], env=env,
                           check=True, timeout=600)
    elif kind == "CPU hog":
        hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    elif kind == "I/O hog":
        hogs = [subprocess.Popen(["sh", "-c", f"while true; do dd if=/dev/zero of={d}/big bs=8M count=1 conv=fsync "
                                              "2>/dev/null; done"])]
    try:
        yield
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


def kill_test(python: Path, library: str, load: str = "alone", quick: bool = False) -> dict[str, Any]:
    with workdir(library) as (d, env):
        progress = str(d / "progress.npy")
        with load_of(load, d, env, python, quick):
            child = subprocess.Popen([str(python), str(WORKLOAD), library, "kill", str(d), progress], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=d)
            assert child.stdout is not None
            if child.stdout.readline().strip() != "ready":
                return {"error": "did not start"}
            time.sleep(2.0)
            killed_at = time.time()
            child.send_signal(signal.SIGKILL)
            child.wait()
        out = subprocess.run([str(python), str(WORKLOAD), library, "recover", str(d), progress, str(killed_at)],
                             env=env, capture_output=True, text=True, timeout=900, cwd=d)
        if out.returncode != 0:
            return {"error": (out.stderr.strip().splitlines() or ["failed"])[-1][:120]}
        return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def end_to_end(library: str, seconds: float) -> dict[str, Any]:
    """One process logs flat out for ``seconds``: points per second until all readable, the lag
    after the last log(), and the agent's peak RSS."""
    python = Path(sys.executable)
    with workdir(library) as (d, env):
        out = subprocess.run([str(python), str(WORKLOAD), library, "sustained", str(d), str(seconds)], env=env,
                             capture_output=True, text=True, timeout=seconds + 120, cwd=d)
        if out.returncode != 0:
            return {"error": (out.stderr.strip().splitlines() or ["failed"])[-1][:120]}
        logged = json.loads(out.stdout.strip().splitlines()[-1])
        back = subprocess.run([str(python), str(WORKLOAD), library, "readable", str(d), str(logged["steps"]),
                               str(max(600.0, seconds * 20))], env=env, capture_output=True, text=True,
                              timeout=max(700.0, seconds * 25), cwd=d)
        ready = json.loads(back.stdout.strip().splitlines()[-1]) if back.returncode == 0 else {"at": None}
        pids = agent_pids(d / "home")
        rss = max((peak_rss_mb(pid) or 0.0 for pid in pids), default=None)
        agent_cpu = sum(cpu_s(pid) for pid in pids)
        if ready.get("at") is None:
            return {"error": "not all readable in time", "points": logged["points"], "agent_peak_rss_mb": rss}
        total = ready["at"] - logged["start"]
        return {"points": logged["points"], "logged_per_s": logged["points"] / (logged["end"] - logged["start"]),
                "readable_per_s": logged["points"] / total, "lag_s": ready["at"] - logged["end"],
                "agent_peak_rss_mb": rss, "agent_cpu_s_per_m_points": agent_cpu / logged["points"] * 1e6}


def measure(library: str, steps: int, repeat: int, quick: bool) -> dict[str, Any] | None:
    python = python_for(library)
    if python is None:
        return None
    print(f"measuring {library} ...", file=sys.stderr, flush=True)
    if library == NOOP:
        return {"loop": run_workload(python, library, "loop", str(steps * LOOP_STEPS_FACTOR))}
    module = "runyard" if library.startswith("runyard") else PEERS[library][1]
    result: dict[str, Any] = {"latency": run_workload(python, library, "latency", str(steps)),
                              "loop": run_workload(python, library, "loop", str(steps * LOOP_STEPS_FACTOR))}
    result["import_ms"] = import_ms(python, module, repeat, child_env(Path("/nonexistent"), library))
    if library in RECOVERABLE:
        loads = LOADS if library.startswith("runyard") and not quick else ("alone",)
        result["kill"] = {load: kill_test(python, library, load, quick) for load in loads}
    if library.startswith("runyard"):
        result["tensor"] = run_workload(python, library, "tensor", str(steps // 10))
    return result


def fmt(value: Any, unit: str = "", digits: int = 1) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}{unit}"


def rows(results: dict[str, dict[str, Any]]) -> list[tuple[str, str, dict[str, str]]]:
    def cell(lib: str, path: tuple[str, ...], unit: str = "", digits: int = 1, scale: float = 1.0) -> str:
        data: Any = results[lib]
        for part in path:
            if not isinstance(data, dict) or "error" in data:
                return "error" if isinstance(data, dict) and "error" in data else "-"
            data = data.get(part)
        return fmt(None if data is None else data * scale, unit, digits)

    def survived(lib: str, load: str) -> str:
        k = (results[lib].get("kill") or {}).get(load)
        if not k:
            return "-"
        if "error" in k:
            return "error"
        if k.get("recovered_logged") is None:
            return "-"
        return f"{k['recovered_logged']:,}/{k['logged']:,} ({100 * k['recovered_logged'] / max(k['logged'], 1):.2f}%)"

    def spread(lib: str) -> str:
        loop = results[lib].get("loop") or {}
        if "slowdown_min" not in loop:
            return "-"
        return f"{loop['slowdown_min']:.3f}-{loop['slowdown_max']:.3f} ({loop['reps']} reps)"

    libs = list(results)
    table = [
        ("log() p50", "<= 1 µs", {lib: cell(lib, ("latency", "p50_us"), " µs", 2) for lib in libs}),
        ("log() p99", "<= 5 µs", {lib: cell(lib, ("latency", "p99_us"), " µs", 2) for lib in libs}),
        ("log() p99.9", "<= 50 µs", {lib: cell(lib, ("latency", "p999_us"), " µs", 1)
                                     for lib in libs}),
        ("loop: logged / bare step (median of reps)", "<= 1.02",
         {lib: cell(lib, ("loop", "slowdown"), "", 3) for lib in libs}),
        ("  spread over repetitions (min-max)", "-", {lib: spread(lib) for lib in libs}),
        ("  logged / step computing the values only", "-",
         {lib: cell(lib, ("loop", "slowdown_values_free"), "", 3) for lib in libs}),
        ("  the bare step", "~100 µs", {lib: cell(lib, ("loop", "step_us"), " µs", 1) for lib in libs}),
        ("CPU of runyard's threads in the process, per M points", "-",
         {lib: cell(lib, ("loop", "writer_cpu_s_per_m_points"), " s", 2) if lib.startswith("runyard") else "-"
          for lib in libs}),
        ("import, above `python -c pass`", "<= 30 ms",
         {lib: fmt(results[lib].get("import_ms"), " ms", 0) if lib != NOOP else "-" for lib in libs}),
        ("finish() to all 400,000 points readable", "<= 1 s",
         {lib: cell(lib, ("latency", "readable_s"), " s", 2) if lib.startswith("runyard") else "-" for lib in libs}),
        ("finish() call (- : still draining after 60 s)", "-",
         {lib: cell(lib, ("latency", "finish_s"), " s", 2) for lib in libs}),
    ]
    for load in LOADS:
        table.append((f"SIGKILL after 2 s, {load}: steps whose log() returned, read back", "all",
                      {lib: survived(lib, load) for lib in libs}))
    table.append(("log() of a tensor whose .item() takes 1 ms: p99", "<= 5 µs",
                  {lib: cell(lib, ("tensor", "p99_us"), " µs", 2) for lib in libs}))
    return table


def verdicts(results: dict[str, Any], library: str = "runyard") -> list[str]:
    if library not in results:
        return []
    r = results[library]
    lat, loop, kill, tensor = r["latency"], r["loop"], r.get("kill", {}), r.get("tensor", {})
    kept = all(k.get("recovered_logged") == k.get("logged") and "error" not in k for k in kill.values())
    checks = [
        ("log() p50 <= 1 µs", lat.get("p50_us", 1e9) <= 1),
        ("log() p99 <= 5 µs", lat.get("p99_us", 1e9) <= 5),
        ("log() p99.9 <= 50 µs", lat.get("p999_us", 1e9) <= 50),
        ("loop: logged / bare <= 1.02", loop.get("slowdown", 9) <= 1.02),
        ("import <= 30 ms", r["import_ms"] <= 30),
        ("finish to readable <= 1 s", lat.get("readable_s", 9) <= 1),
        ("SIGKILL: every step whose log() returned read back, under every load", kept),
        ("log() of a slow tensor p99 <= 5 µs", tensor.get("p99_us", 1e9) <= 5),
    ]
    return [f"{'met    ' if ok else 'NOT MET'}  {name}" for name, ok in checks]


def print_table(table: list[tuple[str, str, dict[str, str]]], libs: list[str]) -> None:
    widths = [max(len(t[0]) for t in table), 10, *[max(12, len(lib), *(len(t[2][lib]) for t in table)) for lib in libs]]
    header = ["", "target", *libs]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    for name, target, cells in table:
        line = [name, target, *[cells[lib] for lib in libs]]
        print("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)))


def main() -> int:
    global BEFORE
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="10,000 steps, runyard and the no-op logger only, SIGKILL with no load, 3 s end to end")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON to this file")
    parser.add_argument("--libraries", default=",".join(["runyard", NOOP, *PEERS]),
                        help=f"comma-separated subset of: runyard, {NOOP}, " + ", ".join(PEERS))
    parser.add_argument("--before", type=Path, help="another checkout's src/: also measured, as runyard-before")
    parser.add_argument("--e2e-seconds", type=float, default=None,
                        help="seconds of flat-out logging for the end-to-end figure (default 30; quick: 3)")
    args = parser.parse_args()
    BEFORE = args.before.resolve() if args.before else None
    steps = 10_000 if args.quick else 100_000
    libraries = ["runyard", NOOP] if args.quick else args.libraries.split(",")
    if BEFORE is not None:
        libraries.insert(1, "runyard-before")
    results: dict[str, dict[str, Any]] = {}
    for library in libraries:
        measured = measure(library, steps, repeat=5 if args.quick else 15, quick=args.quick)
        if measured is not None:
            results[library] = measured
            print(json.dumps({library: measured}), file=sys.stderr, flush=True)
    libs = list(results)
    print_table(rows(results), libs)
    missing = [p for p in PEERS if p not in results and p in libraries]
    if missing:
        print(f"\nnot measured (run `make bench-peers` to build them): {', '.join(missing)}")
    seconds = args.e2e_seconds if args.e2e_seconds is not None else (3.0 if args.quick else 30.0)
    e2e = {lib: end_to_end(lib, seconds) for lib in libs if lib.startswith("runyard")}
    results["end_to_end"] = e2e
    print(f"\nend to end: one process logging flat out for {seconds:g} s (4 points per call), SQLite")
    e2e_rows = [
        ("points logged per second", "-", "logged_per_s", "", 0),
        ("points per second, first log() to all readable", ">= 1,000,000", "readable_per_s", "", 0),
        ("lag after the last log() until all readable", "<= 1 s", "lag_s", " s", 2),
        ("agent peak RSS", "<= 200 MiB", "agent_peak_rss_mb", " MiB", 0),
        ("agent CPU per million points", "-", "agent_cpu_s_per_m_points", " s", 2),
    ]
    print_table([(name, target, {lib: ("error: " + e2e[lib]["error"])
                                 if "error" in e2e[lib] and key != "agent_peak_rss_mb"
                                 else fmt(e2e[lib].get(key), unit, digits) for lib in e2e})
                 for name, target, key, unit, digits in e2e_rows], list(e2e))
    print()
    for line in verdicts(results):
        print(line)
    runyard_e2e = e2e.get("runyard", {})
    for name, ok in (("end to end >= 1,000,000 points/s readable", runyard_e2e.get("readable_per_s", 0) >= 1e6),
                     ("end to end lag <= 1 s", runyard_e2e.get("lag_s", 9e9) <= 1.0),
                     ("agent peak RSS <= 200 MiB", (runyard_e2e.get("agent_peak_rss_mb") or 9e9) <= 200)):
        print(f"{'met    ' if ok else 'NOT MET'}  {name}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
