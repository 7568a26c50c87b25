"""Store benchmark: bulk ingest, envelope queries, the runs table, and a home with 10,000 finished
runs, on SQLite and PostgreSQL.

    python bench/store.py                 # full sizes, both engines, prints a table
    python bench/store.py --quick         # small sizes, to check the benchmark itself runs
    python bench/store.py --json out.json # also write the figures as JSON
    python bench/store.py --home-runs 5000  # the home's size (seeding 10,000 runs takes minutes)
    python bench/store.py --only home       # only the home's figures (or --only store: the others)

Runs carry the environment ``runyard.init`` records: its basic facts, git state and about 100
installed packages (``environment``), since every listing reads that record with the run.

The home: 10,000 finished SDK runs (300 with --quick), each as a finished run leaves it: the SDK's
own spool writer writes what runyard.init, log(), print() and finish() give it (start and
environment events, 200 steps of 4 metrics, a few printed lines, the end event) and closes, then
the agent's tailer ingests them all in one pass, writing the acks (and retiring the spools, where
the code does), so that disk and store hold exactly what 10,000 real runs leave. Measured on it:
  - idle ingest pass: one ``Tailer.poll()`` as the agent makes it (nothing new to ingest; median of
    a few passes after a first one);
  - ``runyard ls``: the real CLI in a child process on that home, wall time from start to exit (it
    catches up on the spool before listing, as every reading command does; median of a few);
  - for context, the CPU time of that child (user + system): on a machine shared with other work
    the wall time is mostly waiting for a core, the CPU time what the command costs;
  - for context, the same ``runyard ls`` with the spool directory set aside: what is left when
    listing does not pay for the finished runs' spools.

PostgreSQL: RUNYARD_BENCH_PG (default postgresql+psycopg://postgres@127.0.0.1:5432/test); the
benchmark works in a schema of its own and drops it afterwards.
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
import resource
import secrets
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

from runyard.store.api import RunQuery
from runyard.store.engine import create_engine
from runyard.store.migrate import upgrade
from runyard.store.schema import projects, run_labels, runs
from runyard.store.scratch import temporary_schema
from runyard.store.series import Points
from runyard.store.sql import SqlStore

PG_URL = os.environ.get("RUNYARD_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
IDLE_PASS_TARGET_MS, LS_TARGET_MS = 5.0, 150.0

#: About 100 packages, pinned as ``runyard.sdk.environment.packages()`` lists them: an ML environment.
PACKAGES = sorted((
    "absl-py==2.1.0", "accelerate==0.33.0", "aiohttp==3.10.5", "aiosignal==1.3.1", "alembic==1.13.2",
    "annotated-types==0.7.0", "anyio==4.4.0", "attrs==24.2.0", "certifi==2024.8.30", "charset-normalizer==3.3.2",
    "click==8.1.7", "cloudpickle==3.0.0", "contourpy==1.3.0", "cycler==0.12.1", "datasets==2.21.0",
    "dill==0.3.8", "einops==0.8.0", "fastapi==0.114.0", "filelock==3.16.0", "fonttools==4.53.1",
    "frozenlist==1.4.1", "fsspec==2024.6.1", "gitdb==4.0.11", "GitPython==3.1.43", "greenlet==3.0.3",
    "grpcio==1.66.1", "h11==0.14.0", "httpcore==1.0.5", "httpx==0.27.2", "huggingface-hub==0.24.6",
    "hydra-core==1.3.2", "idna==3.8", "imageio==2.35.1", "ipykernel==6.29.5", "ipython==8.27.0",
    "jedi==0.19.1", "Jinja2==3.1.4", "joblib==1.4.2", "jsonschema==4.23.0", "jupyter_client==8.6.2",
    "jupyter_core==5.7.2", "kiwisolver==1.4.7", "lazy_loader==0.4", "lightning==2.4.0", "Markdown==3.7",
    "markdown-it-py==3.0.0", "MarkupSafe==2.1.5", "matplotlib==3.9.2", "mpmath==1.3.0", "msgpack==1.0.8",
    "multidict==6.1.0", "multiprocess==0.70.16", "networkx==3.3", "numpy==1.26.4", "nvidia-cublas-cu12==12.1.3.1",
    "nvidia-cuda-runtime-cu12==12.1.105", "nvidia-cudnn-cu12==9.1.0.70", "nvidia-nccl-cu12==2.20.5",
    "omegaconf==2.3.0", "opencv-python-headless==4.10.0.84", "orjson==3.10.7", "packaging==24.1",
    "pandas==2.2.2", "parso==0.8.4", "pexpect==4.9.0", "pillow==10.4.0", "platformdirs==4.3.2",
    "prompt_toolkit==3.0.47", "protobuf==5.28.0", "psutil==6.0.0", "pyarrow==17.0.0", "pydantic==2.9.1",
    "pydantic_core==2.23.3", "Pygments==2.18.0", "pyparsing==3.1.4", "python-dateutil==2.9.0.post0",
    "pytorch-lightning==2.4.0", "pytz==2024.1", "PyYAML==6.0.2", "pyzmq==26.2.0", "regex==2024.7.24",
    "requests==2.32.3", "rich==13.8.1", "safetensors==0.4.5", "scikit-image==0.24.0", "scikit-learn==1.5.1",
    "scipy==1.14.1", "sentencepiece==0.2.0", "setuptools==74.1.2", "six==1.16.0", "SQLAlchemy==2.0.34",
    "starlette==0.38.5", "sympy==1.13.2", "tensorboard==2.17.1", "threadpoolctl==3.5.0", "tokenizers==0.19.1",
    "torch==2.4.1", "torchmetrics==1.4.1", "torchvision==0.19.1", "tqdm==4.66.5", "transformers==4.44.2",
    "triton==3.0.0", "typing_extensions==4.12.2", "urllib3==2.2.2", "wandb==0.17.9", "xxhash==3.5.0",
), key=str.lower)


def environment(i: int = 0) -> dict[str, Any]:
    """What runyard.init records about a run's environment (sdk/environment.py: basics, git, packages),
    as the store keeps it (git commit and branch go to columns of their own)."""
    return {
        "argv": ["train.py", "--lr", f"{0.001 * (1 + i % 10):g}", "--epochs", "20"],
        "python": "3.11.9", "executable": "/home/ana/.venvs/ml/bin/python",
        "platform": "Linux-6.8.0-45-generic-x86_64-with-glibc2.39", "host": "gpu-box-3", "pid": 40_000 + i,
        "cwd": "/home/ana/projects/segmentation", "git_remote": "git@github.com:ana/segmentation.git",
        "packages": PACKAGES,
    }


@dataclass
class Row:
    benchmark: str
    engine: str
    target: str
    measured: str
    value: float
    ok: bool | None


@contextmanager
def database(engine_name: str) -> Iterator[str]:
    if engine_name == "sqlite":
        with tempfile.TemporaryDirectory(prefix="runyard-bench-") as d:
            yield f"sqlite:///{Path(d) / 'bench.db'}"
        return
    with temporary_schema(PG_URL, "runyard_bench") as url:
        yield url


def open_store(url: str) -> SqlStore:
    engine = create_engine(url)
    upgrade(engine)
    return SqlStore(engine)


def median_ms(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm caches and compiled statements, as a chart's second query would find them
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def new_run(store: SqlStore) -> int:
    from runyard.store.api import NewRun

    return store.create_run(NewRun(project="bench")).number


def bench_ingest(store: SqlStore, engine_name: str, steps: int, batch: int) -> Row:
    run = new_run(store)
    rng = np.random.default_rng(1)
    all_steps = np.arange(steps, dtype=np.int64)
    times = 1.7e9 + all_steps * 0.01
    values = {k: rng.normal(size=steps) for k in ("loss", "acc", "lr", "grad_norm")}
    t0 = time.perf_counter()
    for begin in range(0, steps, batch):
        sl = slice(begin, begin + batch)
        store.append_points(run, {k: Points(all_steps[sl], times[sl], v[sl]) for k, v in values.items()})
    rate = 4 * steps / (time.perf_counter() - t0)
    target_ok = rate >= 1_000_000 if engine_name == "sqlite" else None
    return Row(f"bulk ingest, 4 series x {steps:,} steps, {batch:,}-step batches", engine_name,
               ">= 1,000,000 points/s" if engine_name == "sqlite" else "(target is for SQLite)",
               f"{rate:,.0f} points/s", rate, target_ok)


def bench_envelope(store: SqlStore, engine_name: str, points: int, repeat: int) -> list[Row]:
    run = new_run(store)
    rng = np.random.default_rng(2)
    batch = 100_000
    t0 = time.perf_counter()
    for begin in range(0, points, batch):
        steps = np.arange(begin, min(begin + batch, points), dtype=np.int64)
        values = rng.normal(size=steps.shape[0])
        store.append_points(run, {"loss": Points(steps, 1.7e9 + steps * 0.01, values)})
    load = time.perf_counter() - t0
    whole = median_ms(lambda: store.envelope(run, "loss", 1000), repeat)
    width = points // 100
    starts = iter(rng.integers(0, points - width, size=repeat + 1).tolist())

    def zoomed() -> object:
        s = next(starts)
        return store.envelope(run, "loss", 1000, start=s, end=s + width - 1)

    zoom = median_ms(zoomed, repeat)
    # The most raw points an envelope ever decodes: just under buckets/2 chunks (above that it uses blocks).
    span = min(499 * 1024, points)
    worst = median_ms(lambda: store.envelope(run, "loss", 1000, start=0, end=span - 1), repeat)
    label = f"envelope, 1 series of {points:,} points, 1,000 buckets"
    return [
        Row(f"loading that series ({-(-points // batch)} appends of up to {batch:,})", engine_name, "-",
            f"{points / load:,.0f} points/s", points / load, None),
        Row(f"{label}, whole range (median of {repeat})", engine_name, "<= 30 ms", f"{whole:.1f} ms", whole,
            whole <= 30),
        Row(f"{label}, random 1% ranges (median of {repeat})", engine_name, "<= 30 ms", f"{zoom:.1f} ms", zoom,
            zoom <= 30),
        Row(f"{label}, worst case: a {span:,}-point range decoded raw (median of {repeat})", engine_name,
            "<= 30 ms", f"{worst:.1f} ms", worst, worst <= 30),
    ]


def insert_runs(store: SqlStore, project: str, count: int, seed: int = 3) -> None:
    """``count`` finished runs in ``project`` at once (one INSERT): 20 config values, a summary with
    accuracy and loss, and a label, baseline for every third run and sweep for the others."""
    rng = np.random.default_rng(seed)
    with store.engine.begin() as conn:
        project_id = conn.execute(
            sa.insert(projects).values(name=project, created_at=time.time()).returning(projects.c.id)
        ).scalar_one()
        first = conn.execute(sa.select(sa.func.coalesce(sa.func.max(runs.c.number), 0))).scalar_one() + 1
        now = time.time()
        rows = [
            {
                "number": first + i, "id": f"01BENCH{first + i:019d}", "project_id": project_id, "name": f"run-{i}",
                "status": "finished", "created_at": now + i, "started_at": now + i,
                "ended_at": now + i + 60.0 * (i % 7),
                "resources": {}, "priority": 0, "notes": "",
                "config": {f"param_{j}": float(rng.random()) for j in range(20)},
                "summary": {"accuracy": float(rng.random()), "loss": float(rng.random())},
                "environment": environment(i), "git_commit": f"{i:040x}", "git_branch": "main",
            }
            for i in range(count)
        ]
        conn.execute(sa.insert(runs), rows)
        labels = [{"run_number": first + i, "label": "baseline" if i % 3 == 0 else "sweep"} for i in range(count)]
        conn.execute(sa.insert(run_labels), labels)
    analyze(store)


def analyze(store: SqlStore) -> None:
    """Fresh planner statistics for the benchmark's own tables (a bare ANALYZE would visit, and wait
    for, every schema of a database that others use too)."""
    if store.dialect != "postgresql":
        return
    from runyard.store.schema import metadata

    with store.engine.begin() as conn:
        for table in metadata.sorted_tables:
            conn.exec_driver_sql(f'ANALYZE "{table.name}"')  # unqualified: the benchmark's schema


def bench_runs_table(store: SqlStore, engine_name: str, count: int, repeat: int) -> Row:
    insert_runs(store, "table", count)
    query = RunQuery(project="table", labels=["baseline"], sort="summary.accuracy", limit=100)
    page = store.list_runs(query)
    assert len(page.items) == 100 and page.items[0].summary["accuracy"] >= page.items[-1].summary["accuracy"]
    ms = median_ms(lambda: store.list_runs(query), repeat)
    return Row(f"{count:,} runs x 20 config values: first page of 100, label filter, sorted by a summary "
               f"metric (median of {repeat})", engine_name, "<= 50 ms", f"{ms:.1f} ms", ms, ms <= 50)


# -- a home with many finished runs ----------------------------------------------------------------

HOME_STEPS = 200
HOME_KEYS = ("loss", "acc", "lr", "grad_norm")
#: Runs whose writers are open at once while seeding (each closes in its own time: overlapping them
#: makes seeding 10,000 runs take a minute or two, not an hour).
SEED_TOGETHER = 100


def finished_run_records(i: int, rng: np.random.Generator) -> list[tuple[Any, ...]]:
    """What runyard.init, log(), print() and finish() hand the spool writer in a short finished run,
    in the producers' form (spool/records.py): record tuples, and metrics groups (map, 0, time, step)."""
    env = environment(i)
    basics = {k: env[k] for k in ("argv", "python", "executable", "platform", "host", "pid", "cwd")}
    t = 1.7e9 + i * 600.0
    out: list[tuple[Any, ...]] = [
        (0, "e", t, {"event": "start", "attach": False, "project": "home", "name": f"run-{i}",
                     "config": {f"param_{j}": float(rng.random()) for j in range(20)},
                     "labels": ["baseline" if i % 3 == 0 else "sweep"], "notes": "", "command": basics["argv"],
                     "host": basics["host"], "environment": basics}),
        (0, "e", t + 0.4, {"event": "environment", "git_commit": f"{i:040x}", "git_branch": "main",
                           "git_remote": env["git_remote"], "packages": env["packages"]}),
    ]
    for step, row in enumerate(rng.normal(size=(HOME_STEPS, len(HOME_KEYS))).tolist()):
        t += 0.05
        if step % 50 == 0:
            out.append((0, "l", t, "stdout", f"epoch {step // 50}: loss {row[0]:.4f}"))
        out.append((dict(zip(HOME_KEYS, row, strict=True)), 0, t, step))
    out.append((0, "e", t + 0.1, {"event": "end", "status": "finished"}))
    return out


def seed_finished_runs(spool_dir: Path, target: str, runs: int) -> int:
    """``runs`` finished SDK runs in ``spool_dir``, each written by the SDK's own spool writer as
    runyard.init and finish() drive it (its segment format, its lock, closed at the end); returns
    how many records they hold. The agent's tailer then ingests them as it would."""
    from runyard.ids import new_ulid
    from runyard.sdk.writer import Writer
    from runyard.spool.rundir import TARGET_FILE

    rng = np.random.default_rng(5)
    records = 0
    for first in range(0, runs, SEED_TOGETHER):
        writers = []
        for i in range(first, min(first + SEED_TOGETHER, runs)):
            run_id = new_ulid()
            directory = spool_dir / run_id
            directory.mkdir(parents=True)
            (directory / TARGET_FILE).write_text(target)
            writer = Writer(directory, run_id, secrets.token_hex(6), fsync="never")
            writer.start()
            for record in finished_run_records(i, rng):
                if isinstance(record[0], dict):
                    writer.queue.extend(record)
                else:
                    writer.queue.append(record)
                records += 1
            writers.append(writer)
        with ThreadPoolExecutor(max_workers=len(writers)) as pool:  # each close waits on its own threads
            closed = list(pool.map(lambda w: w.close(60.0), writers))
        if not all(closed):
            raise RuntimeError("a spool writer did not write every record")
    return records


def cli_ms(env: dict[str, str], cwd: Path, args: list[str], repeat: int) -> tuple[float, float]:
    """Median wall time of the runyard CLI in a child process, after one run that warms the caches,
    and the median CPU time (user + system) of that child: on a shared machine the wall time is
    mostly what other processes leave, the CPU time what the command itself costs."""
    command = [sys.executable, "-m", "runyard.cli.main", *args]
    times, cpu = [], []
    for n in range(repeat + 1):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
        elapsed = (time.perf_counter() - t0) * 1000
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if done.returncode != 0 or "run-" not in done.stdout:
            raise RuntimeError(f"runyard {' '.join(args)} failed: {done.stderr[-500:]}")
        if n:
            times.append(elapsed)
            cpu.append((after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) * 1000)
    return statistics.median(times), statistics.median(cpu)


def bench_home(engine_name: str, url: str, runs: int, repeat: int) -> list[Row]:
    from runyard.config import resolve
    from runyard.ingest.sink import StoreSink
    from runyard.ingest.tailer import Tailer
    from runyard.spool.rundir import target_key
    from runyard.store.home import open_store as open_home

    with tempfile.TemporaryDirectory(prefix="runyard-bench-home-") as d:
        home = Path(d) / "home"
        env = {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")}
        env.update({"RUNYARD_HOME": str(home), "RUNYARD_SYSTEM_INTERVAL": "0"})
        if engine_name == "postgresql":
            env["RUNYARD_DB"] = url
            upgrade(create_engine(url))  # a team's database is migrated by its admin
        settings = resolve(environ=env, cwd=Path(d))
        opened = open_home(settings)
        target = target_key(settings)
        t0 = time.perf_counter()
        records = seed_finished_runs(settings.spool_dir, target, runs)
        written = time.perf_counter() - t0
        # The agent ingests them, completes their writers (and, where it does, retires their spools).
        ingested = Tailer(StoreSink(opened.store, opened.artifacts), settings.spool_dir, target).poll()
        if ingested.records < records or ingested.errors:  # (a writer may add heartbeats of its own)
            raise RuntimeError(f"the agent ingested {ingested.records:,} of the {records:,} records seeded"
                               + (f": {ingested.errors[0].error}" if ingested.errors else ""))
        analyze(opened.store)
        print(f"  {engine_name}: {runs:,} finished runs written in {written:.0f} s, ingested in "
              f"{time.perf_counter() - t0 - written:.0f} s", file=sys.stderr, flush=True)
        # A pass as the agent makes it, over and over (its watcher acts only on what is applied: nothing).
        tailer = Tailer(StoreSink(opened.store, opened.artifacts), settings.spool_dir, target)
        first = tailer.poll()
        assert first.records == 0 and not first.errors, "the seeded home had records left to ingest"
        passes = []
        for _ in range(repeat):
            t = time.perf_counter()
            tailer.poll()
            passes.append((time.perf_counter() - t) * 1000)
        idle = statistics.median(passes)
        opened.close()
        cli_repeat = max(3, repeat // 4)
        ls, ls_cpu = cli_ms(env, Path(d), ["ls"], cli_repeat)
        aside = settings.spool_dir.with_name("spool-aside")
        settings.spool_dir.rename(aside)
        try:
            ls_bare, _ = cli_ms(env, Path(d), ["ls"], cli_repeat)
        finally:
            aside.rename(settings.spool_dir)
    label = f"home of {runs:,} finished runs"
    return [
        Row(f"{label}: idle ingest pass (one Tailer.poll, nothing new; median of {repeat})", engine_name,
            f"<= {IDLE_PASS_TARGET_MS:g} ms", f"{idle:.1f} ms", idle, idle <= IDLE_PASS_TARGET_MS),
        Row(f"{label}: `runyard ls` (the CLI in a child process, wall time; median of {cli_repeat})", engine_name,
            f"<= {LS_TARGET_MS:g} ms", f"{ls:.0f} ms", ls, ls <= LS_TARGET_MS),
        Row(f"  the same `runyard ls`: the child's CPU time, user + system (median of {cli_repeat})", engine_name,
            "-", f"{ls_cpu:.0f} ms", ls_cpu, None),
        Row(f"  the same `runyard ls` with the spool directory set aside (median of {cli_repeat})", engine_name,
            "-", f"{ls_bare:.0f} ms", ls_bare, None),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes: check the benchmark runs")
    parser.add_argument("--engines", default="sqlite,postgresql", help="comma-separated: sqlite,postgresql")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON to this file")
    parser.add_argument("--home-runs", type=int, help="finished runs in the home (default 10,000; quick 300)")
    parser.add_argument("--only", choices=("store", "home"), help="only the store's figures, or only the home's")
    args = parser.parse_args()
    steps, points, count, repeat = (2_000, 50_000, 300, 3) if args.quick else (250_000, 10_000_000, 10_000, 20)
    args.home_runs = args.home_runs or (300 if args.quick else 10_000)

    results: list[Row] = []
    for engine_name in args.engines.split(","):
        if args.only != "home":
            with database(engine_name) as url:
                store = open_store(url)
                results.append(bench_ingest(store, engine_name, steps, batch=min(10_000, steps)))
                results += bench_envelope(store, engine_name, points, repeat)
                results.append(bench_runs_table(store, engine_name, count, repeat))
                store.close()
        if args.only != "store":
            with database(engine_name) as url:
                try:
                    results += bench_home(engine_name, url, args.home_runs, repeat)
                except Exception as e:  # noqa: BLE001 - report it beside the other figures
                    results.append(Row(f"home of {args.home_runs:,} finished runs", engine_name, "-",
                                       f"error: {type(e).__name__}: {e}"[:120], float("nan"), False))

    width = max(len(r.benchmark) for r in results)
    header = f"{'benchmark':<{width}}  {'engine':<10}  {'target':<22}  {'measured':<20}  result"
    print(header)
    print("-" * len(header))
    for r in results:
        verdict = {True: "met", False: "NOT MET", None: ""}[r.ok]
        print(f"{r.benchmark:<{width}}  {r.engine:<10}  {r.target:<22}  {r.measured:<20}  {verdict}")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))
    missed = [r for r in results if r.ok is False]
    if args.quick:
        return 0
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
