"""Alerts benchmark: ingest throughput while alerts fire into a dead webhook, and time to an alert.

    python bench/alerts.py            # full sizes, prints a table
    python bench/alerts.py --quick    # small sizes: checks the benchmark itself runs
    python bench/alerts.py --json F   # also write the figures as JSON

Throughput: the local ingest path (records -> build_batch -> store.ingest -> alert rules, as the
agent applies them) into a SQLite home, batches of 10,000 records of 4 metrics, each batch with a
NaN loss. Three runs are fed in turn, block by block, in one process (so the machine's noise falls
on all three alike): one with no rule, one whose NaN rule notifies the inbox only, and one whose
NaN rule (cooldown 0: it fires on every batch) also notifies a webhook that accepts connections and
never answers. The outbox thread hands every alert to the dispatcher, which keeps retrying it; the
figure is points per second per run; each ratio is the median of the blocks' ratios (2 batches a block).

Time to an alert: a real script (SDK, writer thread, local agent) logs a NaN loss every 0.5 s;
for each, the time from its log() call (the point's own timestamp) to the alert being in the inbox
(the alert's timestamp, taken as the rule fired). The issue asks for "within 1 s of a point's
ingest"; this measures from log(), which is stricter (it includes the writer's flush and the
agent's pass).
"""

from __future__ import annotations

# This folder holds logging.py (the name the issue gives the logging benchmark), which would shadow
# the standard library's logging module for any script run from here: take the folder off the path.
import sys
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]


import argparse
import json
import logging
import math
import os
import socket
import statistics
import subprocess
import tempfile
import textwrap
import threading
import time
from typing import Any

from runyard.agent import stop_agents
from runyard.alerts.dispatch import Dispatcher, NotifySettings
from runyard.config import resolve
from runyard.ingest.alerting import Outbox, Watcher
from runyard.ingest.apply import apply_records
from runyard.spool import records
from runyard.store.api import AlertRule, NewRun
from runyard.store.home import open_store
from runyard.types import RunStatus

RECORDS_PER_BATCH = 10_000
THROUGHPUT_TARGET = 0.95  # dead webhook / inbox only: "ingest throughput unchanged", within noise
LATENCY_TARGET_S = 1.0


class DeadWebhook:
    """Accepts connections and never answers: the worst a webhook can do (a refused one fails fast)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1024)
        self.connections = 0
        self.held: list[socket.socket] = []
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/hook"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            self.held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


def batch_records(first_seq: int, first_step: int) -> list[Any]:
    out = []
    now = time.time()
    for i in range(RECORDS_PER_BATCH):
        step = first_step + i
        loss = math.nan if i == RECORDS_PER_BATCH // 2 else 1.0 / (step + 1)
        out.append({"loss": loss, "acc": 0.5, "lr": 0.01, "grad": 0.1,
                    records.SEQ: first_seq + i, records.TIME: now, records.STEP: step})
    return out


def bench_throughput(home: Path, blocks: int, batches_per_block: int) -> dict[str, Any]:
    settings = resolve(environ={"RUNYARD_HOME": str(home)}, cwd=home)
    opened = open_store(settings)
    store, artifacts = opened.store, opened.artifacts
    dead = DeadWebhook()
    watcher = Watcher(store)
    outbox = Outbox(store, Dispatcher(lambda notice: NotifySettings(webhook_url=dead.url, allow_private=True)).start(),
                    stop=lambda number, why: None).start(interval=0.05)
    runs: dict[str, Any] = {}
    for case in ("no rule", "inbox only", "dead webhook"):
        runs[case] = store.create_run(NewRun(project="bench", name=case, status=RunStatus.RUNNING))
    store.add_alert_rule(AlertRule("nan-inbox", "nan", {"metric": "loss", "cooldown": 0.0}, notify=("inbox",),
                                   run=runs["inbox only"].number))
    store.add_alert_rule(AlertRule("nan-hook", "nan", {"metric": "loss", "cooldown": 0.0},
                                   notify=("inbox", "webhook"), run=runs["dead webhook"].number))
    seconds: dict[str, list[float]] = {case: [] for case in runs}
    cursors = dict.fromkeys(runs, -1)
    run_dir = home / "unused"
    for block in range(blocks):
        order = list(runs) if block % 2 == 0 else list(reversed(runs))
        for case in order:
            run = runs[case]
            spent = 0.0
            for b in range(batches_per_block):
                n = block * batches_per_block + b
                recs = batch_records(n * RECORDS_PER_BATCH, n * RECORDS_PER_BATCH)
                started = time.perf_counter()
                _, cursors[case] = apply_records(store, artifacts, run_dir, run.id, "w1", recs, cursors[case], watcher)
                spent += time.perf_counter() - started
            seconds[case].append(spent)
    points = blocks * batches_per_block * RECORDS_PER_BATCH * 4
    time.sleep(1.5)  # let the outbox hand the last alerts over and the dispatcher try them
    events = {case: len(store.list_alert_events(run=run.number)) for case, run in runs.items()}
    counts = {case: sum(s.count for s in store.list_series(run.number)) for case, run in runs.items()}
    pending = outbox.dispatcher.pending()
    outbox.close()
    dead.close()
    opened.close()
    rate = {case: points / sum(s) for case, s in seconds.items()}

    def ratio(case: str, base: str) -> float:
        # Median of the blocks' ratios: a pause of the machine's falls on one block, not on the figure.
        return statistics.median(b / a for a, b in zip(seconds[case], seconds[base], strict=True))

    return {"points_per_run": points, "rate": rate, "events": events, "stored_points": counts,
            "webhook_connections": dead.connections, "dispatcher_pending": pending,
            "ratio_dead_vs_inbox": ratio("dead webhook", "inbox only"),
            "ratio_dead_vs_none": ratio("dead webhook", "no rule"),
            "ratio_inbox_vs_none": ratio("inbox only", "no rule")}


LATENCY_SCRIPT = """
import math, time, runyard
run = runyard.init(project="bench", name="latency")
run.alert("nan", "nan", metric="loss", cooldown=0.001)
for i in range({count}):
    run.log({{"loss": 1.0}}, step=2 * i)
    time.sleep(0.25)
    run.log({{"loss": math.nan}}, step=2 * i + 1)
    time.sleep(0.25)
time.sleep(1.5)
run.finish()
"""


def bench_latency(home: Path, count: int) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")}
    env.update({"RUNYARD_HOME": str(home), "RUNYARD_SYSTEM_INTERVAL": "0"})
    script = home.parent / "latency.py"
    script.write_text(textwrap.dedent(LATENCY_SCRIPT.format(count=count)))
    subprocess.run([sys.executable, str(script)], env=env, check=True, timeout=120, cwd=home.parent)
    settings = resolve(environ=env, cwd=home.parent)
    opened = open_store(settings)
    try:
        number = opened.store.get_run("latency").number
        pts = opened.store.history(number, "loss")
        nan_time = {int(s): float(t) for s, t, v in zip(pts.steps, pts.times, pts.values, strict=True)
                    if math.isnan(v)}
        events = [e for e in opened.store.list_alert_events(run=number) if e.kind == "nan"]
        delays = [e.time - nan_time[int(e.step)] for e in events if e.step is not None and int(e.step) in nan_time]
    finally:
        opened.close()
        stop_agents(settings.home)
    return {"nans": count, "alerts": len(delays), "p50_s": statistics.median(delays) if delays else math.inf,
            "max_s": max(delays) if delays else math.inf}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes: check the benchmark runs")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON to this file")
    args = parser.parse_args()
    logging.getLogger("runyard.alerts.dispatch").setLevel(logging.ERROR)  # the retries are expected here
    blocks, per_block, nans = (2, 2, 3) if args.quick else (40, 2, 10)
    with tempfile.TemporaryDirectory(prefix="runyard-bench-alerts-") as tmp:
        throughput = bench_throughput(Path(tmp) / "ingest-home", blocks, per_block)
        latency = bench_latency(Path(tmp) / "latency-home", nans)
    figures = {"throughput": throughput, "latency": latency}
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    rate = throughput["rate"]
    rows = [
        ("ingest, no alert rule (points/s)", "-", f"{rate['no rule']:,.0f}"),
        ("ingest, NaN rule firing every batch, inbox only", "-", f"{rate['inbox only']:,.0f}"),
        ("ingest, same rule, webhook that never answers", "-", f"{rate['dead webhook']:,.0f}"),
        ("  dead webhook / inbox only (median of blocks)", f">= {THROUGHPUT_TARGET}",
         f"{throughput['ratio_dead_vs_inbox']:.3f}"),
        ("  dead webhook / no rule", "-", f"{throughput['ratio_dead_vs_none']:.3f}"),
        ("  inbox only / no rule (the rule's own cost)", "-", f"{throughput['ratio_inbox_vs_none']:.3f}"),
        ("  alerts recorded (inbox only, dead webhook)", "one per batch",
         f"{throughput['events']['inbox only']}, {throughput['events']['dead webhook']}"),
        ("  points stored per run", f"{throughput['points_per_run']:,}",
         ", ".join(f"{v:,}" for v in throughput["stored_points"].values())),
        ("  webhook connections tried; deliveries still pending", "> 0; > 0",
         f"{throughput['webhook_connections']}; {throughput['dispatcher_pending']}"),
        ("log() of a NaN to its alert in the inbox, p50", f"<= {LATENCY_TARGET_S:.0f} s", f"{latency['p50_s']:.3f} s"),
        ("  same, worst", f"<= {LATENCY_TARGET_S:.0f} s", f"{latency['max_s']:.3f} s"),
        ("  alerts raised / NaNs logged", "all", f"{latency['alerts']}/{latency['nans']}"),
    ]
    width = max(len(r[0]) for r in rows) + 2
    print(f"{'':<{width}}{'target':<16}runyard")
    for name, target, value in rows:
        print(f"{name:<{width}}{target:<16}{value}")
    batches = blocks * per_block
    checks = [
        ("dead webhook leaves ingest throughput unchanged", throughput["ratio_dead_vs_inbox"] >= THROUGHPUT_TARGET),
        ("every batch's NaN raised its alert", throughput["events"]["dead webhook"] == batches
         and throughput["events"]["inbox only"] == batches),
        ("nothing lost while alerting", set(throughput["stored_points"].values()) == {throughput["points_per_run"]}),
        ("the dead webhook is being retried", throughput["webhook_connections"] > 0
         and throughput["dispatcher_pending"] > 0),
        ("alert within 1 s of log()", latency["max_s"] <= LATENCY_TARGET_S and latency["alerts"] == latency["nans"]),
    ]
    print()
    for name, ok in checks:
        print(f"{'met' if ok else 'NOT MET':<9}{name}")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
