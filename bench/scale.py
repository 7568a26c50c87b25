"""Scale benchmark (issue 15): runyard beyond one process.

    python bench/scale.py              # full sizes, prints a table
    python bench/scale.py --quick      # small sizes: checks the benchmark itself runs
    python bench/scale.py --json       # also print the figures as JSON
    python bench/scale.py --sections ray   # only some sections (servers, ray, s3)

Section "servers": N `runyard server` processes on one PostgreSQL database, as a team runs them
behind a proxy (each requires tokens; the database holds them).

- Ingest through two servers from 8 client processes (4 send to each) against the same 8 through
  one server: the clients, batches and measure of bench/ingest.py (records as the shipper sends
  them, bodies encoded before the clock starts; all points / wall time from the first send to the
  last acknowledgement, the median of the rounds, fresh runs each). No target: on a machine with few
  cores the servers, the clients and PostgreSQL share them, and the ratio says more about the
  machine than about runyard; the cores and the machine's busy share are printed beside.
- Live events across servers: a point POSTed to server A (its value the time it was sent), and how
  long until a subscriber of server B's event stream receives it (B hears of it by LISTEN/NOTIFY).

Section "s3" (bench/scale_s3.py): snapshot upload of a 1,000-file repository into SeaweedFS, first
and unchanged (targets 2 s and 300 ms), and existence checks of 1,000 objects batched three ways.

Section "ray" (bench/scale_ray.py): runs through a real Ray head on loopback with two fake GPUs,
queue -> start latency against a local run and the makespan of 20 one-GPU runs against the ideal.

PostgreSQL: RUNYARD_BENCH_PG (default postgresql+psycopg://postgres@127.0.0.1:5432/test); the
benchmark works in a schema of its own and drops it afterwards.
"""

from __future__ import annotations

# This folder holds logging.py, which would shadow the standard library's logging module: off the path.
import sys
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import importlib.util
import json
import multiprocessing as mp
import statistics
import tempfile
import threading
import time
from contextlib import ExitStack
from types import ModuleType
from typing import Any

import httpx

from runyard import wire

HERE = Path(__file__).resolve().parent
LATENCY_TARGET_MS = 1000.0
SECTIONS = ("servers", "s3", "ray")


def _section(name: str) -> ModuleType:
    """bench/NAME.py, loaded by path (this folder is off sys.path, see above)."""
    spec = importlib.util.spec_from_file_location(f"runyard_bench_{name}", HERE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _ingest_bench() -> ModuleType:
    """bench/ingest.py, whose server, clients and table this benchmark shares (loaded by path:
    this folder is not a package, and it is off sys.path, see above)."""
    module = sys.modules.get("runyard_bench_ingest")
    if module is None:
        spec = importlib.util.spec_from_file_location("runyard_bench_ingest", HERE / "ingest.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["runyard_bench_ingest"] = module
        spec.loader.exec_module(module)
    return module


def client(*args: Any) -> None:
    """A client process (spawned: this module is its main): bench/ingest.py's client_worker."""
    _ingest_bench().client_worker(*args)


def ingest_round(urls: list[str], token: str, batches: int, records: int, round_no: int) -> dict[str, Any]:
    """8 client processes, client i sending to ``urls[i % len(urls)]``; points/s over all of them."""
    from runyard.ids import new_ulid

    ib = _ingest_bench()
    ctx = mp.get_context("spawn")
    ready, go, out = ctx.Barrier(ib.CLIENTS + 1), ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=client, args=(urls[i % len(urls)], token, new_ulid(), round_no, i, batches, records,
                                              ready, go, out), daemon=True) for i in range(ib.CLIENTS)]
    for p in procs:
        p.start()
    results: list[dict[str, Any]] = []
    try:
        ready.wait(timeout=120)
        machine0 = ib.machine_cpu()
        go.set()
        while len(results) < ib.CLIENTS:
            results.append(out.get(timeout=600))
        machine1 = ib.machine_cpu()
    finally:
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
    errors = [r["error"] for r in results if "error" in r]
    if errors:
        return {"error": errors[0]}
    metric_records, _, _ = ib.record_counts(batches, records)
    points = ib.CLIENTS * metric_records * len(ib.KEYS)
    wall = max(r["last"] for r in results) - min(r["first"] for r in results)
    total, idle = machine1[0] - machine0[0], machine1[1] - machine0[1]
    return {"points": points, "wall_s": wall, "points_per_s": points / wall,
            "cursors_short": sum(r["cursor"] != batches * records for r in results),
            "machine_busy": 1 - idle / total if total else float("nan")}


def cross_latency(a: Any, b: Any, points: int, interval: float) -> list[float]:
    """Seconds from POSTing a point to A until B's event stream delivers it, per point."""
    from runyard.ids import new_ulid

    ib = _ingest_bench()
    run_id = new_ulid()
    headers = {"content-type": wire.MSGPACK, "content-encoding": wire.ENCODING_DEFLATE, **a.auth(a.writer)}
    with httpx.Client(base_url=a.url, headers=headers, timeout=30) as http:
        http.post("/api/v1/ingest", content=ib.encode(run_id, "lat", [ib.start_record("latency")])).raise_for_status()
        delays: list[float] = []
        opened = threading.Event()

        def subscribe() -> None:
            with httpx.stream("GET", f"{b.url}/api/v1/events", params={"run": run_id}, headers=b.auth(b.reader),
                              timeout=30) as events:
                for line in events.iter_lines():
                    opened.set()
                    if line.startswith("data: {\"key\""):
                        data = json.loads(line[6:])
                        now = time.time()
                        delays.extend(now - v for v in data["value"])
                        if len(delays) >= points:
                            return

        reader = threading.Thread(target=subscribe, daemon=True)
        reader.start()
        opened.wait(30)
        for step in range(points):
            record = {"t": time.time(), "\x00": step + 2, "\x01": time.time(), "\x02": step}
            http.post("/api/v1/ingest", content=ib.encode(run_id, "lat", [record])).raise_for_status()
            time.sleep(interval)
        reader.join(10)
    return delays


def bench_servers(tmp: Path, batches: int, records: int, rounds: int,
                  lat_points: int) -> tuple[list[Any], dict[str, Any]]:
    ib = _ingest_bench()
    Row = ib.Row
    figures: dict[str, Any] = {}
    with ExitStack() as stack:
        db_url = stack.enter_context(ib.database("postgresql", tmp))
        a = stack.enter_context(ib.server(db_url, tmp / "a"))
        b = stack.enter_context(ib.server(db_url, tmp / "b"))
        one = [ingest_round([a.url], a.writer, batches, records, n) for n in range(rounds)]
        two = [ingest_round([a.url, b.url], a.writer, batches, records, rounds + n) for n in range(rounds)]
        delays = [d * 1000 for d in cross_latency(a, b, lat_points, 0.05)]
    errors = [m["error"] for m in one + two if "error" in m]
    label = (f"ingest, {ib.CLIENTS} client processes x {batches} batches of {records:,} records"
             + (f" (median of {rounds})" if rounds > 1 else ""))
    if errors:
        return [Row(label, "postgresql", "-", f"error: {errors[0][:60]}", None, False)], {"errors": errors}

    def median(ms: list[dict[str, Any]]) -> dict[str, Any]:
        return sorted(ms, key=lambda m: m["points_per_s"])[len(ms) // 2]

    r1, r2 = median(one), median(two)
    speedup = r2["points_per_s"] / r1["points_per_s"]
    short = sum(m["cursors_short"] for m in one + two)
    figures = {"one_server": one, "two_servers": two, "speedup": speedup, "cores": ib.os.cpu_count(),
               "latency_ms": delays}
    rows = [
        Row(f"{label}: one server", "postgresql", "-",
            f"{r1['points_per_s']:,.0f} points/s; machine {r1['machine_busy']:.0%} busy", r1["points_per_s"], None),
        Row(f"{label}: two servers, 4 clients each", "postgresql", f"- ({ib.os.cpu_count()} cores)",
            f"{r2['points_per_s']:,.0f} points/s ({speedup:.2f}x); machine {r2['machine_busy']:.0%} busy",
            r2["points_per_s"], None if short == 0 else False),
    ]
    if delays:
        p50, worst = statistics.median(delays), max(delays)
        rows.append(Row(f"a point POSTed to server A, seen by a subscriber of server B: p50, max ({len(delays)} "
                        f"points)", "postgresql", f"< {LATENCY_TARGET_MS:.0f} ms", f"{p50:.0f} ms, {worst:.0f} ms",
                        worst, worst < LATENCY_TARGET_MS))
    else:
        rows.append(Row("a point POSTed to server A, seen by a subscriber of server B", "postgresql",
                        f"< {LATENCY_TARGET_MS:.0f} ms", "no points arrived", None, False))
    return rows, figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes: check the benchmark runs")
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    parser.add_argument("--rounds", type=int, help="measurements per configuration, median shown (default 3, quick 1)")
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"comma-separated, of {', '.join(SECTIONS)} (default: all)")
    args = parser.parse_args()
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        parser.error(f"no section {unknown[0]!r}; the sections are {', '.join(SECTIONS)}")
    from runyard.ingest.shipper import SHIP_CHUNK

    records = 2_000 if args.quick else SHIP_CHUNK
    batches = 2 if args.quick else max(1, 160_000 // records)
    rounds = args.rounds or (1 if args.quick else 3)
    rows: list[Any] = []
    figures: dict[str, Any] = {}
    if "servers" in sections:
        with tempfile.TemporaryDirectory(prefix="runyard-bench-scale-") as d:
            rows, figures = bench_servers(Path(d), batches, records, rounds, 20 if args.quick else 100)
    if "s3" in sections:
        rows += [_ingest_bench().Row(label, "s3", target, measured, None, {"met": True, "NOT MET": False}.get(result))
                 for label, target, measured, result in _section("scale_s3").s3_rows(args.quick)]
    if "ray" in sections:
        ray_rows, figures["ray"] = _section("scale_ray").bench_ray(args.quick)
        rows += [_ingest_bench().Row(label, "sqlite", target, measured, None, None)
                 for label, target, measured in ray_rows]
    _ingest_bench().print_table(rows, figures, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
