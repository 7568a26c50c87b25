"""Server benchmark: ingest throughput over HTTP, and latency from log() to a live (SSE) subscriber,
on a server as a team runs it: tokens required, two dashboards open, log lines among the metrics.

    python bench/ingest.py                    # both engines, full sizes, prints a table
    python bench/ingest.py --quick            # small sizes: checks the benchmark itself runs
    python bench/ingest.py --engine sqlite    # one engine (sqlite, postgresql or both)
    python bench/ingest.py --json             # also print the figures as JSON

The server: one `runyard server` process that requires tokens (a writer token and a reader token
exist before it starts, so the loopback server asks every request for one): the clients and the
latency script's shipper send the writer token, the dashboards and the read-backs the reader token.
Two dashboards stay open from the server's start to the end, reading their event streams the whole
time, as two browser tabs would: a runs table (/api/v1/events, every project) and a run page
(/api/v1/events?run=..., following the run of client 0 in each round, then the latency run).

Throughput: 8 client processes, each with a run of its own, POST batches of records (every
twentieth a line of printed output, the others 4 metrics; compressed msgpack as the shipper sends
them) to /api/v1/ingest, one after another, for a fixed number of batches. A batch holds as many
records as the shipper puts in one request (runyard.ingest.shipper.SHIP_CHUNK, 20,000): a server
that cannot keep up lets every client's spool grow, so at saturation each request is that full.
`--records N` measures smaller requests (each pays the per-request costs on fewer points). The
bodies are encoded before the clock starts (the clients share the machine's cores with the server:
what is measured is the server), and the figure is all points / wall time from the first send to
the last acknowledgement, the median of 3 rounds (fresh runs each). Every run's point counts are
then read back through /api/v1/runs/{ref}/metrics, and its log lines through .../logs. To show
where the time goes, the server process's CPU time (all its threads, from /proc) is reported per
request and as a share of one core, with the clients' and the whole machine's: a server near 100%
of one core is bound by its own Python code, not the clients.
The dashboards' figures: the runs table's events, and how long after a client created its run the
table showed it; the run page's metric events and points, and how long after client 0's last
acknowledgement the page held that run's last step (a stream sends at most 5,000 points of a series
per event and announces the rest, so a page receives fewer points than were logged in a burst).

Latency: a client process (its own home, RUNYARD_SERVER set) logs {"t": time.time()} every 50 ms
through the SDK: writer thread -> spool -> local agent (shipper) -> POST /ingest -> server -> SSE.
A subscriber on /api/v1/events?run=lat records, for each point, arrival time minus the value. The
run appears on the server with the client's first batch, and a stream sends only what arrives after
it connects: the points of that first batch are not seen (hence "received / logged"). The run page
follows the same run, and its delays are reported beside the subscriber's.

PostgreSQL: RUNYARD_BENCH_PG (default postgresql+psycopg://postgres@127.0.0.1:5432/test); the
benchmark works in a schema of its own and drops it afterwards.
"""

from __future__ import annotations

# This folder holds logging.py (the name the issue gives the logging benchmark), which would shadow the
# standard library's logging module (httpx uses it) for any script run from here: take the folder off the path.
import sys
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]


import argparse
import json
import multiprocessing as mp
import os
import signal
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from typing import Any

import httpx

from runyard import wire

ROOT = Path(__file__).resolve().parents[1]
PG_URL = os.environ.get("RUNYARD_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
KEYS = ("loss", "acc", "lr", "grad_norm")
CLIENTS = 8
#: Every LOG_EVERY-th record of a batch is a line of printed output (a training loop's progress).
LOG_EVERY = 20
RECORDS_PER_BATCH = 20_000  # replaced by --records; the default is SHIP_CHUNK (checked in main)
THROUGHPUT_TARGET = 500_000
P50_TARGET_MS, P99_TARGET_MS = 200.0, 1000.0


@dataclass
class Row:
    benchmark: str
    engine: str
    target: str
    measured: str
    value: float | None
    ok: bool | None


# -- the server ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")}
    env.update({"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    env.update(extra)
    return env


@contextmanager
def database(engine_name: str, tmp: Path) -> Iterator[str]:
    if engine_name == "sqlite":
        yield f"sqlite:///{tmp / 'server-home' / 'bench.db'}"
        return
    from runyard.store.engine import create_engine
    from runyard.store.migrate import upgrade
    from runyard.store.scratch import temporary_schema

    with temporary_schema(PG_URL, "runyard_bench") as url:
        engine = create_engine(url)
        upgrade(engine)  # the server migrates only SQLite by itself
        engine.dispose()
        yield url


@dataclass
class Served:
    url: str
    pid: int
    #: Secrets of the tokens the server requires: the shippers' and the dashboards'.
    writer: str = ""
    reader: str = ""

    def auth(self, token: str) -> dict[str, str]:
        return {"authorization": f"Bearer {token}"}


def server_env(db_url: str, tmp: Path) -> dict[str, str]:
    return clean_env(RUNYARD_HOME=str(tmp / "server-home"), RUNYARD_DB=db_url, RUNYARD_SYSTEM_INTERVAL="0")


def create_tokens(db_url: str, tmp: Path) -> tuple[str, str]:
    """A writer and a reader token in the server's database, before it starts: a server on loopback
    requires a token from every request once one exists, as a team's server does."""
    from runyard.config import resolve
    from runyard.store.home import open_store
    from runyard.store.tokens import Tokens

    opened = open_store(resolve(environ=server_env(db_url, tmp), cwd=tmp))  # creates a SQLite home
    try:
        tokens = Tokens(opened.store)
        return tokens.create("writer", name="bench-shipper")[1], tokens.create("reader", name="bench-dashboard")[1]
    finally:
        opened.close()


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads), from /proc; 0 where there is no /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu() -> tuple[int, int]:
    """(total, idle) jiffies of all cores, from /proc/stat; (0, 0) where there is none."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except OSError:
        return 0, 0
    return sum(values), values[3] + values[4]


@contextmanager
def server(db_url: str, tmp: Path, timeout: float = 30.0) -> Iterator[Served]:
    """A `runyard server` child process in a session of its own; kills its process group afterwards."""
    home = tmp / "server-home"
    home.mkdir(parents=True, exist_ok=True)
    writer, reader = create_tokens(db_url, tmp)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp / "server.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "runyard.cli.main", "server", "--host", "127.0.0.1", "--port", str(port)],
            env=server_env(db_url, tmp),
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True, cwd=str(tmp))
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited: {log_path.read_text()[-2000:]}")
            try:
                health = httpx.get(f"{url}/api/health", timeout=1.0, headers={"authorization": f"Bearer {reader}"})
                if health.status_code == 200:
                    if httpx.get(f"{url}/api/health", timeout=5.0).status_code != 401:
                        raise RuntimeError("the server answers without a token")
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start: {log_path.read_text()[-2000:]}")
            time.sleep(0.1)
        yield Served(url, proc.pid, writer, reader)
    finally:
        if proc.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


# -- throughput ------------------------------------------------------------------------------------


def start_record(name: str) -> list[Any]:
    return [0, "e", time.time(), {"event": "start", "project": "ingest", "name": name, "config": {},
                                  "labels": [], "notes": "", "command": [], "host": "h", "environment": {}}]


def encode(run_id: str, writer: str, items: list[Any]) -> bytes:
    """As runyard.client.Client.ingest encodes a batch."""
    return wire.deflate(wire.pack_ingest(run_id, writer, items))


def is_log_line(index: int) -> bool:
    """Whether the record of this index (from 0, over all of a client's batches) is printed output."""
    return (index + 1) % LOG_EVERY == 0


def record_counts(batches: int, records: int) -> tuple[int, int, int]:
    """(metrics records, log lines, last metrics step) of one client's batches."""
    total = batches * records
    logs = total // LOG_EVERY
    last = max(i for i in range(max(0, total - LOG_EVERY - 1), total) if not is_log_line(i))
    return total - logs, logs, last


def batch_bodies(run_id: str, writer: str, batches: int, seed: int, records: int) -> list[bytes]:
    """``batches`` bodies of ``records`` records, sequence numbers from 1: metrics records of 4 keys
    (step: the record's index), every LOG_EVERY-th a line of printed output instead."""
    import numpy as np

    rng = np.random.default_rng(seed)
    t0 = time.time()
    bodies = []
    for b in range(batches):
        first = b * records
        values = rng.normal(size=(records, len(KEYS))).tolist()
        items: list[Any] = []
        for i, row in enumerate(values):
            step = first + i
            if is_log_line(step):
                items.append([step + 1, "l", t0 + step * 0.01, "stdout", f"step {step}: loss {row[0]:.4f}"])
                continue
            rec: dict[str, Any] = dict(zip(KEYS, row, strict=True))
            rec["\x00"], rec["\x01"], rec["\x02"] = step + 1, t0 + step * 0.01, step
            items.append(rec)
        bodies.append(encode(run_id, writer, items))
    return bodies


def client_worker(url: str, token: str, run_id: str, round_no: int, index: int, batches: int, records: int,
                  ready: Any, go: Any, out: Any) -> None:
    """One client process: create its run, encode its batches, wait for the start, send them in turn."""
    try:
        writer = f"bench{index}"
        http = httpx.Client(base_url=url, timeout=httpx.Timeout(300.0, connect=10.0))
        headers = {"content-type": wire.MSGPACK, "content-encoding": wire.ENCODING_DEFLATE,
                   "authorization": f"Bearer {token}"}

        def post(body: bytes) -> dict[str, Any]:
            import msgpack

            response = http.post("/api/v1/ingest", content=body, headers=headers)
            response.raise_for_status()
            return dict(msgpack.unpackb(response.content))

        # The run exists and the connection is open before the clock starts.
        post(encode(run_id, writer, [start_record(f"client-{round_no}-{index}")]))
        bodies = batch_bodies(run_id, writer, batches, seed=round_no * CLIENTS + index, records=records)
        ready.wait()
        go.wait()
        first, cpu = time.monotonic(), time.process_time()
        cursor = 0
        for body in bodies:
            cursor = int(post(body)["cursor"])
        last, cpu = time.monotonic(), time.process_time() - cpu
        http.close()
        out.put({"index": index, "run_id": run_id, "first": first, "last": last, "cursor": cursor, "cpu": cpu,
                 "bytes": sum(len(b) for b in bodies)})
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which prints it
        out.put({"index": index, "error": f"{type(e).__name__}: {e}"[:300]})


def one_round(served: Served, batches: int, round_no: int, page: Dashboard) -> dict[str, Any]:
    """One measurement: CLIENTS processes send their batches at once; every point and line is then counted
    back. The run page follows client 0's run."""
    from runyard.ids import new_ulid

    ctx = mp.get_context("spawn")
    ready, go, out = ctx.Barrier(CLIENTS + 1), ctx.Event(), ctx.Queue()
    run_ids = [new_ulid() for _ in range(CLIENTS)]
    procs = [ctx.Process(target=client_worker, args=(served.url, served.writer, run_ids[i], round_no, i, batches,
                                                     RECORDS_PER_BATCH, ready, go, out), daemon=True)
             for i in range(CLIENTS)]
    for p in procs:
        p.start()
    results: list[dict[str, Any]] = []
    try:
        ready.wait(timeout=120)
        page.follow({"run": run_ids[0]})  # the run exists: its client created it before the barrier
        time.sleep(0.2)
        cpu0, machine0, t0 = process_cpu_s(served.pid), machine_cpu(), time.monotonic()
        go.set()
        while len(results) < CLIENTS:
            results.append(out.get(timeout=600))
        cpu1, machine1, t1 = process_cpu_s(served.pid), machine_cpu(), time.monotonic()
    except Exception as e:  # noqa: BLE001 - a broken barrier or a stuck client: report, do not hang
        results.append({"index": -1, "error": f"{type(e).__name__}: {e}"})
    finally:
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
                p.join()
    errors = [r["error"] for r in results if "error" in r]
    if errors:
        return {"error": errors[0]}
    metric_records, log_lines, last_step = record_counts(batches, RECORDS_PER_BATCH)
    points = CLIENTS * metric_records * len(KEYS)
    wall = max(r["last"] for r in results) - min(r["first"] for r in results)
    # Did every point and line arrive? Count them through the read API, and check every writer's cursor.
    arrived, lines, short = 0, 0, 0
    with httpx.Client(base_url=served.url, timeout=60, headers=served.auth(served.reader)) as http:
        for r in results:
            series = http.get(f"/api/v1/runs/{r['run_id']}/metrics").raise_for_status().json()
            arrived += sum(int(s["count"]) for s in series if s["key"] in KEYS)
            after = 0
            while page_of := http.get(f"/api/v1/runs/{r['run_id']}/logs",
                                      params={"after": after, "limit": 10_000}).raise_for_status().json():
                lines += len(page_of)
                after = page_of[-1]["id"]
            short += r["cursor"] != batches * RECORDS_PER_BATCH
    # The open run page: when did it hold client 0's last step (after that client's last acknowledgement)?
    client0 = next(r for r in results if r["index"] == 0)
    shown_at = page.wait_for_step(run_ids[0], KEYS[0], last_step, timeout=10.0)
    seen = page.points_of(run_ids[0])
    # Where the time goes: the server's own CPU (all its threads), the clients' and the machine's, same window.
    total, idle = machine1[0] - machine0[0], machine1[1] - machine0[1]
    return {"points": points, "lines": CLIENTS * log_lines, "wall_s": wall, "points_per_s": points / wall,
            "arrived": arrived, "lines_arrived": lines, "cursors_short": short,
            "request_ms_mean": statistics.mean((r["last"] - r["first"]) / batches * 1000 for r in results),
            "compressed_mib": sum(r["bytes"] for r in results) / 2**20, "requests": CLIENTS * batches,
            "server_cpu_s": cpu1 - cpu0, "window_s": t1 - t0, "clients_cpu_s": sum(r["cpu"] for r in results),
            "machine_busy": 1 - idle / total if total else float("nan"),
            "page_points": seen, "page_points_logged": metric_records * len(KEYS),
            "page_lag_ms": None if shown_at is None else (shown_at - client0["last"]) * 1000,
            "created": {f"client-{round_no}-{i}" for i in range(CLIENTS)}}


def bench_throughput(served: Served, engine_name: str, batches: int, rounds: int,
                     dashboards: Dashboards) -> tuple[list[Row], dict[str, Any]]:
    label = (f"ingest over HTTP, {CLIENTS} client processes x {batches} batches of {RECORDS_PER_BATCH:,} records "
             f"(1 in {LOG_EVERY} a log line, the others {len(KEYS)} metrics)"
             + (f" (median of {rounds})" if rounds > 1 else ""))
    target = f">= {THROUGHPUT_TARGET:,} points/s"
    measured = [one_round(served, batches, n, dashboards.page) for n in range(rounds)]
    errors = [m["error"] for m in measured if "error" in m]
    if errors:
        return [Row(label, engine_name, target, f"error: {errors[0][:60]}", None, False)], {"errors": errors}
    mid = sorted(measured, key=lambda m: m["points_per_s"])[len(measured) // 2]
    rate = mid["points_per_s"]
    points, arrived = sum(m["points"] for m in measured), sum(m["arrived"] for m in measured)
    lines, lines_arrived = sum(m["lines"] for m in measured), sum(m["lines_arrived"] for m in measured)
    short = sum(m["cursors_short"] for m in measured)
    complete = arrived == points and lines_arrived == lines and short == 0
    spread = "" if rounds == 1 else f" ({min(m['points_per_s'] for m in measured) / 1000:,.0f}k-" \
        f"{max(m['points_per_s'] for m in measured) / 1000:,.0f}k)"
    server_cpu, requests = sum(m["server_cpu_s"] for m in measured), sum(m["requests"] for m in measured)
    server_share = server_cpu / sum(m["window_s"] for m in measured)
    clients_share = sum(m["clients_cpu_s"] for m in measured) / sum(m["wall_s"] for m in measured)
    busy = statistics.mean(m["machine_busy"] for m in measured)
    # The runs table: how long after each client created its run did the open table show it?
    created = set().union(*(m.pop("created") for m in measured))
    table = dashboards.table.first_seen(created)
    delays = [ms for ms in table.values()]
    lags = [m["page_lag_ms"] for m in measured if m["page_lag_ms"] is not None]
    page_points, page_logged = sum(m["page_points"] for m in measured), sum(m["page_points_logged"] for m in measured)
    figures = {"points_per_s": rate, "rounds": measured, "server_cpu_ms_per_request": server_cpu / requests * 1000,
               "server_cpu_share_of_one_core": server_share, "clients_cpu_share_of_one_core": clients_share,
               "machine_busy": busy, "cores": os.cpu_count(),
               "runs_table": {"run_events": len(dashboards.table.runs), "runs_shown": len(table),
                              "runs_created": len(created), "delay_ms": delays,
                              "errors": dashboards.table.errors[:5]},
               "run_page": {"metric_events": dashboards.page.metric_events(), "points": page_points,
                            "points_logged": page_logged, "lag_ms": lags, "errors": dashboards.page.errors[:5]}}
    shown = (f"{len(table)}/{len(created)} runs; {percentile(delays, 0.5):.0f} ms, {max(delays):.0f} ms"
             if delays else f"0/{len(created)} runs")
    rows = [
        Row(label, engine_name, target, f"{rate:,.0f} points/s{spread}", rate, rate >= THROUGHPUT_TARGET and complete),
        Row("  points and log lines read back through /runs/{ref}/metrics and /logs (all runs, all rounds)",
            engine_name, f"{points:,}; {lines:,}", f"{arrived:,}; {lines_arrived:,}"
            + ("" if short == 0 else f" ({short} cursors short)"), arrived, complete),
        Row(f"  wall time; mean time per {RECORDS_PER_BATCH:,}-record request seen by a client "
            f"({mid['compressed_mib']:.0f} MiB sent)", engine_name, "-",
            f"{mid['wall_s']:.2f} s; {mid['request_ms_mean']:.0f} ms", mid["wall_s"], None),
        Row("  server CPU per request; server, clients: share of one core; all cores busy", engine_name, "-",
            f"{server_cpu / requests * 1000:.0f} ms; {server_share:.0%}, {clients_share:.0%}; {busy:.0%}",
            server_cpu / requests, None),
        Row("  runs table dashboard: run events received; clients' runs shown; after creation p50, max", engine_name,
            "-", f"{len(dashboards.table.runs)} events; {shown}", percentile(delays, 0.5) if delays else None, None),
        Row("  run page dashboard on client 0's run: metric events, points received / logged; last step shown "
            "after the last ack (median)", engine_name, "-",
            f"{dashboards.page.metric_events()} events, {page_points:,}/{page_logged:,}; "
            + (f"{statistics.median(lags):.0f} ms" if lags else "never"),
            statistics.median(lags) if lags else None, None),
    ]
    return rows, figures


# -- the dashboards --------------------------------------------------------------------------------


class Dashboard(threading.Thread):
    """An open dashboard tab: reads one event stream the whole time, reconnecting as a browser's
    EventSource does, and notes what arrives. ``follow`` points it at another stream (a new page)."""

    def __init__(self, url: str, token: str, params: dict[str, str] | None) -> None:
        super().__init__(daemon=True)
        self.url, self.token = url, token
        self._params = params
        self._lock = threading.Lock()
        self._response: httpx.Response | None = None
        self._stopped = threading.Event()
        #: (arrival wall time, name, created_at) of each run event.
        self.runs: list[tuple[float, str | None, float]] = []
        #: (run followed, arrival monotonic and wall times, key, steps, values of "t") of each metric event.
        self.metrics: list[tuple[str, float, float, str, list[int], list[float]]] = []
        self.errors: list[str] = []
        self.connects = 0

    def follow(self, params: dict[str, str] | None) -> None:
        with self._lock:
            self._params = params
            if self._response is not None:
                # As a browser leaving the page: the connection closes, the blocked read fails at once
                # (closing the response would wait for the next line, up to a 15 s keep-alive).
                stream = self._response.extensions.get("network_stream")
                sock = stream.get_extra_info("socket") if stream is not None else None
                with suppress(OSError):
                    if sock is not None:
                        sock.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        self._stopped.set()
        self.follow(None)
        self.join(timeout=10)

    def run(self) -> None:
        headers = {"authorization": f"Bearer {self.token}"}
        with httpx.Client(base_url=self.url, headers=headers, timeout=httpx.Timeout(60.0, connect=5.0)) as http:
            while not self._stopped.is_set():
                with self._lock:
                    params = self._params
                if params is None:
                    time.sleep(0.01)
                    continue
                try:
                    with http.stream("GET", "/api/v1/events", params=params) as response:
                        if response.status_code == 404:  # the run is not on the server yet
                            time.sleep(0.02)
                            continue
                        response.raise_for_status()
                        with self._lock:
                            if self._params is not params:
                                continue
                            self._response = response
                        self.connects += 1
                        self._read(response, params.get("run", ""))
                except Exception as e:  # noqa: BLE001 - a closed stream (follow) or a failure: note, go on
                    with self._lock:
                        switched = self._params is not params
                    if not switched and not self._stopped.is_set():
                        self.errors.append(f"{type(e).__name__}: {e}"[:200])
                        time.sleep(0.2)
                finally:
                    with self._lock:
                        self._response = None

    def _read(self, response: httpx.Response, run: str) -> None:
        kind = ""
        for line in response.iter_lines():
            if line.startswith("event:"):
                kind = line[6:].strip()
            elif line.startswith("data:"):
                mono, wall = time.monotonic(), time.time()
                data = json.loads(line[5:])
                if kind == "run":
                    self.runs.append((wall, data.get("name"), float(data.get("created_at") or 0.0)))
                elif kind == "metric" and "step" in data:
                    values = data["value"] if data["key"] == "t" else []
                    self.metrics.append((run, mono, wall, data["key"], data["step"], values))

    def first_seen(self, names: set[str]) -> dict[str, float]:
        """Of these runs, those a run event showed: milliseconds from the run's creation to its first event."""
        seen: dict[str, float] = {}
        for wall, name, created in list(self.runs):
            if name in names and name not in seen:
                seen[name] = (wall - created) * 1000
        return seen

    def metric_events(self) -> int:
        return len(self.metrics)

    def points_of(self, run: str) -> int:
        return sum(len(steps) for r, _, _, _, steps, _ in list(self.metrics) if r == run)

    def wait_for_step(self, run: str, key: str, step: int, timeout: float) -> float | None:
        """The monotonic time an event brought ``step`` of the series, waiting up to ``timeout`` for it."""
        deadline = time.monotonic() + timeout
        while True:
            for r, mono, _, k, steps, _ in list(self.metrics):
                if r == run and k == key and steps and steps[-1] >= step:
                    return mono
            if time.monotonic() > deadline:
                return None
            time.sleep(0.05)

    def delays(self, run: str, key: str) -> list[float]:
        """Milliseconds from each point's value (the time it was logged) to its arrival, once per step."""
        out, steps_seen = [], set()
        for r, _, wall, k, steps, values in list(self.metrics):
            if r == run and k == key:
                for step, value in zip(steps, values, strict=True):
                    if step not in steps_seen:
                        steps_seen.add(step)
                        out.append((wall - value) * 1000)
        return out


@dataclass
class Dashboards:
    """Two open tabs: the runs table of every project, and a run page."""

    table: Dashboard
    page: Dashboard

    @classmethod
    def open(cls, served: Served) -> Dashboards:
        boards = cls(Dashboard(served.url, served.reader, {}), Dashboard(served.url, served.reader, None))
        boards.table.start()
        boards.page.start()
        return boards

    def close(self) -> None:
        self.table.stop()
        self.page.stop()


# -- latency ---------------------------------------------------------------------------------------


def latency_client(points: int, interval: float) -> int:
    """The logging side of the latency test (run in a child process with RUNYARD_SERVER set)."""
    import runyard

    run = runyard.init(project="lat", name="lat")
    next_at = time.monotonic()
    for i in range(points):
        run.log({"t": time.time()}, step=i)
        next_at += interval
        time.sleep(max(0.0, next_at - time.monotonic()))
    run.finish()
    return 0


class Subscriber(threading.Thread):
    """Waits for run ``lat`` to exist, follows its event stream, notes each point's delay."""

    def __init__(self, url: str, token: str, deadline: float) -> None:
        super().__init__(daemon=True)
        self.url, self.token, self.deadline = url, token, deadline
        self.delays: list[float] = []
        self.steps: set[int] = set()
        self.ended = threading.Event()
        self.error: str | None = None

    def run(self) -> None:
        try:
            self._follow()
        except Exception as e:  # noqa: BLE001 - the stream ends when the server is killed: note, go on
            if not self.ended.is_set():
                self.error = f"{type(e).__name__}: {e}"[:200]

    def _follow(self) -> None:
        with httpx.Client(base_url=self.url, timeout=httpx.Timeout(30.0, connect=5.0),
                          headers={"authorization": f"Bearer {self.token}"}) as http:
            while http.get("/api/v1/runs/lat").status_code == 404:
                if time.monotonic() > self.deadline:
                    raise TimeoutError("run lat never appeared on the server")
                time.sleep(0.005)
            with http.stream("GET", "/api/v1/events", params={"run": "lat"}) as response:
                response.raise_for_status()
                kind = ""
                for line in response.iter_lines():
                    now = time.time()
                    if line.startswith("event:"):
                        kind = line[6:].strip()
                    elif line.startswith("data:"):
                        data = json.loads(line[5:])
                        if kind == "metric" and data.get("key") == "t" and "value" in data:
                            for step, value in zip(data["step"], data["value"], strict=True):
                                if step not in self.steps:
                                    self.steps.add(step)
                                    self.delays.append(now - value)
                        elif kind == "run" and data.get("status") not in ("queued", "starting", "running"):
                            self.ended.set()
                            return
                    if time.monotonic() > self.deadline:
                        return


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def bench_latency(served: Served, engine_name: str, tmp: Path, points: int, interval: float,
                  dashboards: Dashboards) -> tuple[list[Row], dict[str, Any]]:
    from runyard.agent import stop_agents

    home = tmp / "client-home"
    env = clean_env(RUNYARD_SERVER=served.url, RUNYARD_TOKEN=served.writer, RUNYARD_HOME=str(home),
                    RUNYARD_SYSTEM_INTERVAL="0",
                    PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])))
    budget = points * interval + 60
    sub = Subscriber(served.url, served.reader, time.monotonic() + budget)
    sub.start()
    dashboards.page.follow({"run": "lat"})  # the page opens the run as soon as it exists
    client = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--latency-client", str(points),
                               "--interval", str(interval)], env=env, cwd=str(tmp), stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _, err = client.communicate(timeout=budget)
    except subprocess.TimeoutExpired:
        client.kill()
        _, err = client.communicate()
    sub.join(timeout=10)  # the run's end follows its last points on the stream
    stop_agents(home)
    label = f"log() to an SSE subscriber, 1 point per {interval * 1000:.0f} ms"
    if client.returncode != 0 or not sub.delays:
        why = (err.strip().splitlines() or [""])[-1][:80] if client.returncode else (sub.error or "no points")
        return [Row(f"{label}: p50", engine_name, f"<= {P50_TARGET_MS:.0f} ms", f"error: {why}", None, False)], \
            {"error": why}
    ms = [d * 1000 for d in sub.delays]
    p50, p99, worst = percentile(ms, 0.5), percentile(ms, 0.99), max(ms)
    page = dashboards.page.delays("lat", "t")
    figures = {"count": len(ms), "logged": points, "p50_ms": p50, "p99_ms": p99, "max_ms": worst,
               "mean_ms": statistics.mean(ms), "stream_error": sub.error,
               "run_page": {"count": len(page), "p50_ms": percentile(page, 0.5) if page else None,
                            "p99_ms": percentile(page, 0.99) if page else None,
                            "errors": dashboards.page.errors[:5]}}
    page_row = Row("  the run page dashboard on the same run: p50, p99; points received / logged", engine_name, "-",
                   f"{percentile(page, 0.5):.0f} ms, {percentile(page, 0.99):.0f} ms; {len(page)}/{points}"
                   if page else "no points", percentile(page, 0.5) if page else None, None)
    return [
        Row(f"{label}: p50", engine_name, f"<= {P50_TARGET_MS:.0f} ms", f"{p50:.0f} ms", p50, p50 <= P50_TARGET_MS),
        Row(f"{label}: p99", engine_name, f"<= {P99_TARGET_MS:,.0f} ms", f"{p99:.0f} ms", p99,
            p99 <= P99_TARGET_MS),
        Row(f"{label}: max; points received / logged", engine_name, "-",
            f"{worst:.0f} ms; {len(ms)}/{points}", worst, None),
        page_row,
    ], figures


# -- main ------------------------------------------------------------------------------------------


def print_table(rows: list[Row], figures: dict[str, Any], as_json: bool) -> None:
    """The table of figures beside their targets, the verdicts, and (``as_json``) all as JSON;
    bench/scale.py prints its sections the same way."""
    width = max(len(r.benchmark) for r in rows)
    header = f"{'benchmark':<{width}}  {'engine':<10}  {'target':<22}  {'measured':<30}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r.benchmark:<{width}}  {r.engine:<10}  {r.target:<22}  {r.measured:<30}")
    print()
    for r in rows:
        if r.ok is not None:
            print(f"{'met    ' if r.ok else 'MISSED '}  {r.engine:<10}  {r.benchmark.strip()}  ({r.target})")
    if as_json:
        print(json.dumps({"figures": figures, "rows": [asdict(r) for r in rows]}, indent=2))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes: check the benchmark runs")
    parser.add_argument("--engine", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    parser.add_argument("--batches", type=int, help="batches per client (default: 160,000 records' worth, "
                        "quick 2)")
    parser.add_argument("--records", type=int, help="records per batch (default: the shipper's SHIP_CHUNK)")
    parser.add_argument("--rounds", type=int, help="throughput measurements per engine, median shown (default 3, "
                        "quick 1)")
    parser.add_argument("--latency-client", type=int, metavar="POINTS", help=argparse.SUPPRESS)
    parser.add_argument("--interval", type=float, default=0.05, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.latency_client is not None:
        return latency_client(args.latency_client, args.interval)

    from runyard.ingest.shipper import SHIP_CHUNK

    global RECORDS_PER_BATCH
    RECORDS_PER_BATCH = args.records or SHIP_CHUNK
    batches = args.batches or (2 if args.quick else max(1, 160_000 // RECORDS_PER_BATCH))
    rounds = args.rounds or (1 if args.quick else 3)
    lat_points = 40 if args.quick else 200
    engines = ["sqlite", "postgresql"] if args.engine == "both" else [args.engine]
    rows: list[Row] = []
    figures: dict[str, Any] = {}
    for engine_name in engines:
        print(f"measuring {engine_name} ...", file=sys.stderr, flush=True)
        with tempfile.TemporaryDirectory(prefix="runyard-bench-ingest-") as d:
            tmp = Path(d)
            try:
                with database(engine_name, tmp) as db_url, server(db_url, tmp) as served:
                    dashboards = Dashboards.open(served)
                    try:
                        t_rows, t_fig = bench_throughput(served, engine_name, batches, rounds, dashboards)
                        l_rows, l_fig = bench_latency(served, engine_name, tmp, lat_points, 0.05, dashboards)
                    finally:
                        dashboards.close()
            except Exception as e:  # noqa: BLE001 - e.g. PostgreSQL is not running: report, measure the rest
                t_rows = [Row("setup", engine_name, "-", f"error: {type(e).__name__}: {e}"[:120], None, False)]
                l_rows, t_fig, l_fig = [], {"error": str(e)}, {}
            rows += t_rows + l_rows
            figures[engine_name] = {"throughput": t_fig, "latency": l_fig}
            print(json.dumps({engine_name: figures[engine_name]}), file=sys.stderr, flush=True)

    print_table(rows, figures, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
