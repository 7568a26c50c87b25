"""Logging benchmark: runyard against its targets and against each peer it can run, same workload.

    python bench/logging.py              # runyard, and every peer built by `make bench-peers`
    python bench/logging.py --quick      # fewer steps: checks the benchmark itself runs
    python bench/logging.py --json F     # also write the figures as JSON

Workload for every library: 100,000 steps, each logging a dict of 4 floats with its step
(bench/peers/workload.py), each measurement in a fresh interpreter; runyard's home exists already
(as after any first use), so the measurements are of logging, not of creating a database. Peers run from their own
virtual environments (.venv-peers/<name>); a peer that does not finish within the time budget
(BENCH_BUDGET_S, default 60 s per measurement) is measured on the steps it did.
"""

from __future__ import annotations

# This folder holds logging.py (the name the issue gives the benchmark), which would shadow the
# standard library's logging module for any script run from here: take the folder off the path.
import sys
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]


import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
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
RECOVERABLE = {"runyard", "mlflow-sync", "mlflow-async"}


def python_for(library: str) -> Path | None:
    if library == "runyard":
        return Path(sys.executable)
    venv = ROOT / ".venv-peers" / PEERS[library][0]
    python = venv / "bin" / "python"
    return python if (venv / ".installed").exists() else None


def child_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNYARD_", "WANDB_", "MLFLOW_"))}
    env.update({"RUNYARD_HOME": str(home), "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
                "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"})
    return env


def prepare_home(library: str, home: Path) -> None:
    """A runyard home that exists already, as on any machine where runyard has been used: the
    measurements are of logging, not of creating a database the first time."""
    if library.startswith("runyard"):
        subprocess.run([sys.executable, "-m", "runyard.cli.main", "doctor"], env=child_env(home), check=True,
                       capture_output=True)


def run_workload(python: Path, library: str, mode: str, *args: str, timeout: float = 900) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="runyard-bench-") as d:
        prepare_home(library, Path(d) / "home")
        out = subprocess.run([str(python), str(WORKLOAD), library, mode, d, *args], env=child_env(Path(d) / "home"),
                             capture_output=True, text=True, timeout=timeout, cwd=d)
        stop_agents(Path(d) / "home")
        if out.returncode != 0:
            return {"error": (out.stderr.strip().splitlines() or ["failed"])[-1][:120]}
        return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def import_ms(python: Path, module: str, repeat: int) -> float:
    def once(code: str) -> float:
        t0 = time.perf_counter()
        subprocess.run([str(python), "-c", code], check=True, capture_output=True)
        return time.perf_counter() - t0

    base, loaded = [], []
    for _ in range(repeat):  # interleaved, so that both see the same machine
        base.append(once("pass"))
        loaded.append(once(f"import {module}"))
    return (statistics.median(loaded) - statistics.median(base)) * 1000


def kill_test(python: Path, library: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="runyard-bench-") as d:
        env = child_env(Path(d) / "home")
        prepare_home(library, Path(d) / "home")
        progress = str(Path(d) / "progress.npy")
        child = subprocess.Popen([str(python), str(WORKLOAD), library, "kill", d, progress], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=d)
        assert child.stdout is not None
        if child.stdout.readline().strip() != "ready":
            return {"error": "did not start"}
        time.sleep(2.0)
        killed_at = time.time()
        child.send_signal(signal.SIGKILL)
        child.wait()
        out = subprocess.run([str(python), str(WORKLOAD), library, "recover", d, progress, str(killed_at)],
                             env=env, capture_output=True, text=True, timeout=600, cwd=d)
        stop_agents(Path(d) / "home")
        if out.returncode != 0:
            return {"error": (out.stderr.strip().splitlines() or ["failed"])[-1][:120]}
        return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def concurrent(library: str, processes: int, steps: int) -> dict[str, Any]:
    """``processes`` runs logging ``steps`` steps each at once into one home: wall time until every
    run is readable, the worst log() p99.9 among them, and failures."""
    python = python_for("runyard")
    assert python is not None
    with tempfile.TemporaryDirectory(prefix="runyard-bench-") as d:
        env = child_env(Path(d) / "home")
        prepare_home(library, Path(d) / "home")
        t0 = time.perf_counter()
        children = [subprocess.Popen([str(python), str(WORKLOAD), library, "latency", d, str(steps)], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=d)
                    for _ in range(processes)]
        outputs = [c.communicate(timeout=900) for c in children]
        wall = time.perf_counter() - t0
        stop_agents(Path(d) / "home")
        results = [json.loads(o.strip().splitlines()[-1]) for o, _ in outputs if o.strip()]
        failures = sum(1 for c in children if c.returncode != 0)
        return {"wall_s": wall, "failures": failures,
                "worst_p999_us": max((r["p999_us"] for r in results), default=None)}


def placement() -> dict[str, Any]:
    """Ingest in a separate agent process (the design) against a thread of the training process."""
    python = python_for("runyard")
    assert python is not None
    print("measuring where ingest runs ...", file=sys.stderr, flush=True)
    out: dict[str, Any] = {}
    for library in ("runyard", "runyard-inproc"):
        out[library] = {"loop": run_workload(python, library, "loop", "30000"),
                        "concurrent": concurrent(library, 8, 50_000)}
    return out


def measure(library: str, steps: int, repeat: int) -> dict[str, Any] | None:
    python = python_for(library)
    if python is None:
        return None
    print(f"measuring {library} ...", file=sys.stderr, flush=True)
    module = "runyard" if library == "runyard" else PEERS[library][1]
    result: dict[str, Any] = {"latency": run_workload(python, library, "latency", str(steps)),
                              "loop": run_workload(python, library, "loop", str(steps))}
    result["import_ms"] = import_ms(python, module, repeat)
    if library in RECOVERABLE:
        result["kill"] = kill_test(python, library)
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

    def survived(lib: str) -> str:
        k = results[lib].get("kill")
        if not k:
            return "-"
        if "error" in k:
            return "error"
        if k.get("recovered_due") is None:
            return "-"
        return f"{k['recovered_due']:,}/{k['due']:,} ({100 * k['recovered_due'] / max(k['due'], 1):.0f}%)"

    libs = list(results)
    return [
        ("machine now: p50 of a dict copy + deque append, same timing", "-",
         {lib: cell(lib, ("latency", "baseline_p50_us"), " µs", 2) for lib in libs}),
        ("log() p50", "<= 1 µs", {lib: cell(lib, ("latency", "p50_us"), " µs", 2) for lib in libs}),
        ("log() p99", "<= 5 µs", {lib: cell(lib, ("latency", "p99_us"), " µs", 2) for lib in libs}),
        ("log() p99.9", "<= 50 µs", {lib: cell(lib, ("latency", "p999_us"), " µs", 1) for lib in libs}),
        ("steps measured (latency)", "100,000", {lib: cell(lib, ("latency", "steps"), "", 0) for lib in libs}),
        ("loop of ~100 µs numpy steps: time with logging / without", "<= 1.02",
         {lib: cell(lib, ("loop", "slowdown"), "", 3) for lib in libs}),
        ("  same, computing the 4 values also counted as logging", "-",
         {lib: cell(lib, ("loop", "slowdown_with_values"), "", 3) for lib in libs}),
        ("import, above `python -c pass`", "<= 30 ms",
         {lib: fmt(results[lib].get("import_ms"), " ms", 0) for lib in libs}),
        ("finish() to all 400,000 points readable", "<= 1 s",
         {lib: cell(lib, ("latency", "readable_s"), " s", 2) if lib == "runyard" else "-" for lib in libs}),
        ("finish() call (- : still draining after 60 s)", "-",
         {lib: cell(lib, ("latency", "finish_s"), " s", 2) for lib in libs}),
        ("SIGKILL after 2 s: points logged > 200 ms before, recovered", "all", {lib: survived(lib) for lib in libs}),
    ]


def verdicts(results: dict[str, Any]) -> list[str]:
    if "runyard" not in results:
        return []
    r = results["runyard"]
    lat, loop, kill = r["latency"], r["loop"], r.get("kill", {})
    checks = [
        ("log() p50 <= 1 µs", lat.get("p50_us", 1e9) <= 1),
        ("log() p99 <= 5 µs", lat.get("p99_us", 1e9) <= 5),
        ("log() p99.9 <= 50 µs", lat.get("p999_us", 1e9) <= 50),
        ("loop slowdown <= 2%", loop.get("slowdown", 9) <= 1.02),
        ("import <= 30 ms", r["import_ms"] <= 30),
        ("finish to readable <= 1 s", lat.get("readable_s", 9) <= 1),
        ("SIGKILL: all points logged > 200 ms before recovered", kill.get("recovered_due") == kill.get("due")),
    ]
    return [f"{'met    ' if ok else 'NOT MET'}  {name}" for name, ok in checks]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10,000 steps, runyard only")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON to this file")
    parser.add_argument("--libraries", default=",".join(["runyard", *PEERS]),
                        help="comma-separated subset of: runyard, " + ", ".join(PEERS))
    parser.add_argument("--no-placement", action="store_true", help="skip the agent-versus-thread comparison")
    args = parser.parse_args()
    steps = 10_000 if args.quick else 100_000
    libraries = ["runyard"] if args.quick else args.libraries.split(",")
    results: dict[str, dict[str, Any]] = {}
    for library in libraries:
        measured = measure(library, steps, repeat=5 if args.quick else 15)
        if measured is not None:
            results[library] = measured
            print(json.dumps({library: measured}), file=sys.stderr, flush=True)
    table = rows(results)
    libs = list(results)
    widths = [max(len(t[0]) for t in table), 10, *[max(12, len(lib)) for lib in libs]]
    header = ["", "target", *libs]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    for name, target, cells in table:
        line = [name, target, *[cells[lib] for lib in libs]]
        print("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)))
    missing = [p for p in PEERS if p not in results and p in libraries]
    if missing:
        print(f"\nnot measured (run `make bench-peers` to build them): {', '.join(missing)}")
    print()
    for line in verdicts(results):
        print(line)
    if not args.quick and not args.no_placement and "runyard" in libraries:
        where = placement()
        print("\nwhere ingest runs (DESIGN.md: a thread of the training process, or one agent process)")
        print(f"{'':58}  {'agent process':>16}  {'thread in process':>18}")
        a, t = where["runyard"], where["runyard-inproc"]
        print(f"{'loop slowdown, 30,000 steps of ~100 µs':58}  {a['loop'].get('slowdown', 0):>16.3f}  "
              f"{t['loop'].get('slowdown', 0):>18.3f}")
        for key, label in (("wall_s", "8 runs x 50,000 steps at once: seconds until all readable"),
                           ("worst_p999_us", "8 runs at once: worst log() p99.9 (µs)"),
                           ("failures", "8 runs at once: processes that failed")):
            print(f"{label:58}  {fmt(a['concurrent'][key], '', 1):>16}  {fmt(t['concurrent'][key], '', 1):>18}")
        results["placement"] = where
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
