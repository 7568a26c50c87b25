"""Launch benchmark: how fast `runyard run` returns, and how fast the CLI starts.

    python bench/launch.py            # prints target and measured, and peers' --help where installed
    python bench/launch.py --quick    # fewer repetitions

`runyard run -- python -c pass` is timed on a git repository of 1,000 files: the first submission
(every file new to the store), the second (nothing changed) and one after editing a file, each in a
fresh home (medians over several homes). Cold starts of `runyard --help` and of `runyard ps` with
1,000 runs in the store are medians of repeated runs, beside `mlflow --help`, `wandb --help` and
`guild --help` from the peers' environments (`make bench-peers`).
"""

from __future__ import annotations

# This folder holds logging.py (the name the issue gives the benchmark), which would shadow the
# standard library's logging module for any script run from here: take the folder off the path.
import sys
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import os
import statistics
import subprocess
import tempfile
import time

from runyard.agent import stop_agents

ROOT = Path(__file__).resolve().parents[1]
RUNYARD = str(Path(sys.executable).parent / "runyard")


def make_repo(directory: Path, files: int) -> None:
    directory.mkdir(parents=True)
    for i in range(files):
        sub = directory / f"pkg{i // 100}"
        sub.mkdir(exist_ok=True)
        (sub / f"module_{i}.py").write_text(f'"""Module {i}."""\n\nVALUE = {i}\n' + "# padding\n" * 40)
    git = ["git", "-c", "user.email=bench@example.com", "-c", "user.name=bench"]
    subprocess.run([*git, "init", "-q"], cwd=directory, check=True)
    subprocess.run([*git, "add", "-A"], cwd=directory, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "bench"], cwd=directory, check=True)


def timed(argv: list[str], env: dict[str, str], cwd: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, env=env, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - t0


def wait_idle(env: dict[str, str], cwd: Path, timeout: float = 120) -> None:
    """Let the launched runs finish, so that they do not weigh on the next measurement."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run([RUNYARD, "ps", "--json"], env=env, cwd=cwd, capture_output=True, text=True)
        if out.returncode == 0 and out.stdout.strip() == "[]":
            return
        time.sleep(0.2)


def bench_submit(repetitions: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"first": [], "second": [], "edited": []}
    with tempfile.TemporaryDirectory(prefix="runyard-bench-") as d:
        repo = Path(d) / "repo"
        make_repo(repo, 1000)
        for rep in range(repetitions):
            env = {**os.environ, "RUNYARD_HOME": str(Path(d) / f"home{rep}"), "RUNYARD_SYSTEM_INTERVAL": "0"}
            env = {k: v for k, v in env.items() if k not in ("RUNYARD_DB", "RUNYARD_ARTIFACTS")}
            subprocess.run([RUNYARD, "doctor"], env=env, cwd=repo, check=True, capture_output=True)
            argv = [RUNYARD, "run", "--", "python", "-c", "pass"]
            times["first"].append(timed(argv, env, repo))
            wait_idle(env, repo)
            times["second"].append(timed(argv, env, repo))
            wait_idle(env, repo)
            (repo / "pkg0" / "module_0.py").write_text(f"VALUE = {rep}\n")
            times["edited"].append(timed(argv, env, repo))
            wait_idle(env, repo)
            stop_agents(Path(env["RUNYARD_HOME"]))
    return times


def bench_cold(repetitions: int) -> dict[str, float]:
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="runyard-bench-") as d:
        home = Path(d) / "home"
        env = {**os.environ, "RUNYARD_HOME": str(home)}
        code = (
            "from runyard.config import resolve\n"
            "from runyard.store.home import open_store\n"
            "from runyard.store.api import NewRun\n"
            "from runyard.store.api import RunPatch\n"
            "from runyard.types import RunStatus\n"
            "o = open_store(resolve())\n"
            "for i in range(1000):\n"
            "    status = RunStatus.RUNNING if i % 100 == 0 else RunStatus.FINISHED\n"
            "    o.store.create_run(NewRun(project='bench', name=f'r{i}', status=status, config={'lr': i}))\n"
        )
        subprocess.run([sys.executable, "-c", code], env=env, check=True)
        for name, argv in (("runyard --help", [RUNYARD, "--help"]), ("runyard ps", [RUNYARD, "ps"]),
                           ("runyard status", [RUNYARD, "status"])):
            timed(argv, env, Path(d))  # warm the OS caches, not the interpreter: every run is a new process
            out[name] = statistics.median(timed(argv, env, Path(d)) for _ in range(repetitions))
        out["runyard status, through a server"] = status_through_server(home, Path(d), repetitions)
        for peer, command in (("mlflow", "mlflow"), ("wandb", "wandb"), ("guild", "guild")):
            binary = ROOT / ".venv-peers" / peer / "bin" / command
            if binary.exists():
                timed([str(binary), "--help"], env, Path(d))
                out[f"{command} --help"] = statistics.median(
                    timed([str(binary), "--help"], env, Path(d)) for _ in range(repetitions))
    return out


def status_through_server(home: Path, cwd: Path, repetitions: int) -> float:
    """`runyard status` on a laptop whose RUNYARD_SERVER is a `runyard server` on ``home``'s database
    (started as the server benchmark starts it)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("ingest_bench", ROOT / "bench" / "ingest.py")
    assert spec is not None and spec.loader is not None
    ingest_bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = ingest_bench  # its dataclasses look their module up
    spec.loader.exec_module(ingest_bench)
    with ingest_bench.server(f"sqlite:///{home / 'runyard.db'}", cwd) as served:
        # The server requires tokens (as a team's does): the laptop holds a reader's.
        laptop = {**os.environ, "RUNYARD_HOME": str(cwd / "laptop"), "RUNYARD_SERVER": served.url,
                  "RUNYARD_TOKEN": served.reader}
        timed([RUNYARD, "status"], laptop, cwd)
        return statistics.median(timed([RUNYARD, "status"], laptop, cwd) for _ in range(repetitions))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    submits = bench_submit(1 if args.quick else 5)
    cold = bench_cold(3 if args.quick else 15)
    rows = []
    for key, label in (("first", "first submission (1,000 new files)"), ("second", "second submission (unchanged)"),
                       ("edited", "after editing one file")):
        value = statistics.median(submits[key]) * 1000
        rows.append((f"runyard run -- python -c pass, {label}", "<= 250 ms", f"{value:.0f} ms",
                     "met" if value <= 250 else "NOT MET"))
    for name, seconds in cold.items():
        ours = name.startswith("runyard")
        label = f"{name} (cold start" + (", 1,000 runs in the store)" if name.startswith(("runyard ps",
                                                                                         "runyard status"))
                                         else ")")
        limit = 100 if name.startswith("runyard status") else 150  # status is for a shell prompt
        rows.append((label, f"<= {limit} ms" if ours else "(peer)", f"{seconds * 1000:.0f} ms",
                     ("met" if seconds * 1000 <= limit else "NOT MET") if ours else ""))
    print_table(rows)
    return 0


def print_table(rows: list[tuple[str, str, str, str]]) -> None:
    """(benchmark, target, measured, result) rows, aligned (bench/notebook.py prints its own so too)."""
    width = max(len(r[0]) for r in rows)
    print(f"{'benchmark':<{width}}  {'target':<10}  {'measured':<10}  result")
    for r in rows:
        print(f"{r[0]:<{width}}  {r[1]:<10}  {r[2]:<10}  {r[3]}")


if __name__ == "__main__":
    raise SystemExit(main())
