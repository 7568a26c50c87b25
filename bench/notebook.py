"""Notebook benchmark: how fast a notebook gets back to its user.

    python bench/notebook.py            # prints target and measured for every section
    python bench/notebook.py --quick    # fewer repetitions
    python bench/notebook.py --json F   # also write the figures as JSON

Sections, each a function of SECTIONS returning table rows (add one by appending to SECTIONS):

- lab (bench/notebook_lab.py): from `runyard notebook` to a cell run in the JupyterLab it
  printed, against `jupyter lab` started by hand on the same machine and the same cell (no target:
  the overhead is what runyard adds).
- cell to run: in a real kernel (nbclient, this venv's ipykernel) with `%load_ext runyard`, the time
  from sending a `%%runyard run` cell to the cell returning, as the notebook's user waits for it,
  and from sending it to the run's user code starting (the run's started_at). The project is a git
  repository of 1,000 files, as in bench/launch.py. The first launch stores them all and starts the
  home's agent; the next ones (one at a time, each run ended before the next: medians) find the
  snapshot mostly stored and the agent running.
"""

from __future__ import annotations

# This folder holds logging.py, which would shadow the standard library's logging module for any
# script run from here: take the folder off the path (as bench/launch.py does).
import sys
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import json
import importlib.util
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Row:
    label: str
    #: Milliseconds the measure should stay under (None: reported, with no target).
    target_ms: float | None
    measured_ms: float

    def cells(self) -> tuple[str, str, str, str]:
        measured = f"{self.measured_ms:.{2 if self.measured_ms < 10 else 0}f} ms"  # a request takes ~1 ms
        if self.target_ms is None:
            return self.label, "-", measured, "-"
        met = "met" if self.measured_ms <= self.target_ms else "NOT MET"
        return self.label, f"<= {self.target_ms:.0f} ms", measured, met


def _launch_module() -> object:
    spec = importlib.util.spec_from_file_location("launch_bench", ROOT / "bench" / "launch.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def bench_cell_to_run(args: argparse.Namespace) -> list[Row]:
    import nbformat
    from nbclient import NotebookClient

    from runyard.agent import stop_agents
    from runyard.api import Api
    from runyard.config import resolve

    repetitions = 3 if args.quick else 10
    returned: list[float] = []
    started: list[float] = []
    with tempfile.TemporaryDirectory(prefix="runyard-bench-") as d:
        repo = Path(d) / "repo"
        _launch_module().make_repo(repo, 1000)  # type: ignore[attr-defined]
        home = Path(d) / "home"
        env = {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")}
        env.update({"RUNYARD_HOME": str(home), "RUNYARD_SYSTEM_INTERVAL": "0"})
        # A home in use: its database made (as bench/launch.py does), no agent running yet.
        subprocess.run([str(Path(sys.executable).parent / "runyard"), "doctor"], env=env, cwd=repo, check=True,
                       capture_output=True)
        nb = nbformat.v4.new_notebook()
        client = NotebookClient(nb, timeout=300, kernel_name="python3",
                                resources={"metadata": {"path": str(repo)}})
        try:
            with client.setup_kernel(env=env):
                execute(client, "%load_ext runyard")
                api = None
                for i in range(repetitions + 1):
                    t_wall = time.time()
                    t0 = time.perf_counter()
                    execute(client, f"%%runyard run --name bench{i}\nx = {i}")
                    returned.append(time.perf_counter() - t0)
                    if api is None:
                        api = Api(resolve(environ=env, cwd=repo), catch_up=False)
                    began = wait_started(api, i + 1)
                    started.append(began - t_wall)
                    wait_ended(api, i + 1)  # the next launch finds the machine quiet
                assert api is not None
                api.close()
        finally:
            stop_agents(home)
    return [
        Row("%%runyard run -> cell returns, first launch (1,000 new files)", 300, returned[0] * 1000),
        Row("%%runyard run -> cell returns (median)", 300, statistics.median(returned[1:]) * 1000),
        Row("%%runyard run -> run starts, first launch (agent starts)", 3000, started[0] * 1000),
        Row("%%runyard run -> run starts (median)", 1000, statistics.median(started[1:]) * 1000),
    ]


def execute(client: object, source: str) -> None:
    import nbformat

    nb = client.nb  # type: ignore[attr-defined]
    cell = nbformat.v4.new_code_cell(source)
    nb.cells.append(cell)
    client.execute_cell(cell, len(nb.cells) - 1)  # type: ignore[attr-defined]
    errors = [o for o in cell.outputs if o.output_type == "error" or o.get("name") == "stderr"]
    if errors:
        raise SystemExit(f"{source!r} failed: {errors}")


def wait_started(api: object, number: int, timeout: float = 120) -> float:
    """The wall-clock time the run's code started (recorded by its supervisor)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = api.store.get_run(number)  # type: ignore[attr-defined]
        if run.started_at is not None:
            return float(run.started_at)
        time.sleep(0.01)
    raise SystemExit(f"run {number} did not start within {timeout:g} s")


def wait_ended(api: object, number: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if api.store.get_run(number).status.is_terminal():  # type: ignore[attr-defined]
            return
        time.sleep(0.05)
    raise SystemExit(f"run {number} did not end within {timeout:g} s")


def bench_lab(args: argparse.Namespace) -> list[Row]:
    """Section "lab" (bench/notebook_lab.py): `runyard notebook` to a cell run in its JupyterLab,
    against `jupyter lab` started by hand and the same cell, in the same run. No target."""
    spec = importlib.util.spec_from_file_location("notebook_lab_bench", ROOT / "bench" / "notebook_lab.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ours, bare = module.measure(args.quick)
    far = module.measure_through_server(100 if args.quick else 300)
    return [Row("runyard notebook -> a cell run in its JupyterLab (median)", None, ours * 1000),
            Row("jupyter lab by hand -> the same cell (median)", None, bare * 1000),
            Row("runyard notebook's overhead over the bare start", None, (ours - bare) * 1000),
            Row("through a server: runyard notebook -> a cell run through the lab origin", None,
                far["through_server"] * 1000),
            Row("GET /api/contents directly, p50", None, far["direct_p50"] * 1000),
            Row("GET /api/contents through the lab origin, p50", None, far["proxied_p50"] * 1000),
            Row("GET /api/contents directly, p99", None, far["direct_p99"] * 1000),
            Row("GET /api/contents through the lab origin, p99", None, far["proxied_p99"] * 1000)]


#: Every section, in the order the table lists them.
SECTIONS: list[Callable[[argparse.Namespace], list[Row]]] = [bench_cell_to_run, bench_lab]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON to this file")
    args = parser.parse_args()
    measured = [row for section in SECTIONS for row in section(args)]
    if args.json:
        args.json.write_text(json.dumps([asdict(row) for row in measured], indent=2))
    _launch_module().print_table([row.cells() for row in measured])  # type: ignore[attr-defined]
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
