"""Store benchmark: bulk ingest, envelope queries and the runs table, on SQLite and PostgreSQL.

    python bench/store.py                 # full sizes, both engines, prints a table
    python bench/store.py --quick         # small sizes, to check the benchmark itself runs
    python bench/store.py --json out.json # also write the figures as JSON

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
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

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
                "environment": {},
            }
            for i in range(count)
        ]
        conn.execute(sa.insert(runs), rows)
        labels = [{"run_number": first + i, "label": "baseline" if i % 3 == 0 else "sweep"} for i in range(count)]
        conn.execute(sa.insert(run_labels), labels)
        if store.dialect == "postgresql":
            conn.exec_driver_sql("ANALYZE")


def bench_runs_table(store: SqlStore, engine_name: str, count: int, repeat: int) -> Row:
    insert_runs(store, "table", count)
    query = RunQuery(project="table", labels=["baseline"], sort="summary.accuracy", limit=100)
    page = store.list_runs(query)
    assert len(page.items) == 100 and page.items[0].summary["accuracy"] >= page.items[-1].summary["accuracy"]
    ms = median_ms(lambda: store.list_runs(query), repeat)
    return Row(f"{count:,} runs x 20 config values: first page of 100, label filter, sorted by a summary "
               f"metric (median of {repeat})", engine_name, "<= 50 ms", f"{ms:.1f} ms", ms, ms <= 50)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes: check the benchmark runs")
    parser.add_argument("--engines", default="sqlite,postgresql", help="comma-separated: sqlite,postgresql")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON to this file")
    args = parser.parse_args()
    steps, points, count, repeat = (2_000, 50_000, 300, 3) if args.quick else (250_000, 10_000_000, 10_000, 20)

    results: list[Row] = []
    for engine_name in args.engines.split(","):
        with database(engine_name) as url:
            store = open_store(url)
            results.append(bench_ingest(store, engine_name, steps, batch=min(10_000, steps)))
            results += bench_envelope(store, engine_name, points, repeat)
            results.append(bench_runs_table(store, engine_name, count, repeat))
            store.close()

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
