"""The writer numbers records as they leave its queue: whatever order producers reach the queue in,
every record reaches the store."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

from runyard.config import resolve
from runyard.ingest.sink import StoreSink
from runyard.ingest.tailer import Tailer
from runyard.sdk.writer import Writer
from runyard.spool import records
from runyard.spool.segment import read_frames, read_header, segments_of
from runyard.store.home import open_store
from runyard.store.newrun import NewRun


def test_records_reaching_the_queue_out_of_order_all_reach_the_store(tmp_path: Path) -> None:
    # Producers that numbered their own records could reach the queue out of order (a thread switch
    # between taking a number and appending): here 1 before 0, as the heartbeat could overtake log().
    # The ingester, tailing the live spool, applies the first record before the second is written;
    # the second must still be applied (it was lost when the spool kept the producers' numbers).
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")}
    settings = resolve(environ={**env, "RUNYARD_HOME": str(tmp_path / "home")}, cwd=tmp_path)
    opened = open_store(settings)
    run = opened.store.create_run(NewRun(project="p", name="raced"))
    tailer = Tailer(StoreSink(opened.store, opened.artifacts), settings.spool_dir, None)
    writer = Writer(settings.spool_dir / run.id, run.id, "w1")
    writer.start()
    writer.queue.append((1, records.HEARTBEAT, time.time()))
    assert writer.flush(10)
    tailer.poll()
    writer.queue.extend(({"loss": 0.0}, 0, time.time(), 0))
    for step in range(1, 5):
        writer.queue.extend(({"loss": step / 10}, records.UNNUMBERED, time.time(), step))
    assert writer.close(10)
    tailer.poll()
    points = opened.store.history(run.number, "loss")
    assert points.steps.tolist() == [0, 1, 2, 3, 4]
    assert points.values.tolist() == [0.0, 0.1, 0.2, 0.3, 0.4]
    opened.close()


def test_spool_sequence_numbers_follow_spool_order(tmp_path: Path) -> None:
    writer = Writer(tmp_path / "run", "01AAAAAAAAAAAAAAAAAAAAAAAA", "w1", max_batch=3)
    for ticket in reversed(range(6)):  # numbers the producers might have given, in the worst order
        if ticket % 2:
            writer.queue.append((ticket, records.NOTE, time.time(), f"note {ticket}"))
        else:
            writer.queue.extend(({"x": float(ticket)}, ticket, time.time(), ticket))
    writer.start()
    assert writer.close(10)
    spooled = _read_spool(tmp_path / "run", "w1")
    assert [records.seq_of(r) for r in spooled] == list(range(6))
    assert [r["x"] if type(r) is dict else r[3] for r in spooled] == [
        "note 5", 4.0, "note 3", 2.0, "note 1", 0.0]  # spool order is queue order


def _read_spool(directory: Path, writer: str) -> list[Any]:
    out: list[Any] = []
    for _, path in segments_of(directory)[writer]:
        data = path.read_bytes()
        header = read_header(data)
        assert header is not None
        for batch in read_frames(data, header.size).batches:
            out.extend(records.unflatten(batch))
    return out


def test_a_value_msgpack_cannot_pack_costs_neither_its_batch_nor_finish(tmp_path: Path) -> None:
    from decimal import Decimal

    import numpy as np

    writer = Writer(tmp_path / "run", "01AAAAAAAAAAAAAAAAAAAAAAAA", "w1")
    writer.start()
    writer.queue.extend(({"x": 1.0}, records.UNNUMBERED, time.time(), 0))
    writer.queue.append((records.UNNUMBERED, records.CONFIG, time.time(), {"lr": Decimal("0.1"), "n": np.array(3)}))
    writer.queue.extend(({"x": 2.0}, records.UNNUMBERED, time.time(), 1))
    assert writer.close(10)
    spooled = _read_spool(tmp_path / "run", "w1")
    assert [r["x"] for r in spooled if type(r) is dict] == [1.0, 2.0]
    assert [r[3] for r in spooled if type(r) is not dict] == [{"lr": "0.1", "n": 3}]


def test_flush_waits_for_what_was_queued_not_for_producers_that_never_stop(tmp_path: Path) -> None:
    # A supervisor's pipe reader fed by a daemon the script left behind keeps queueing log lines.
    writer = Writer(tmp_path / "run", "01AAAAAAAAAAAAAAAAAAAAAAAA", "w1")
    writer.start()
    writer.queue.extend(({"x": 1.0}, records.UNNUMBERED, time.time(), 0))
    stop = threading.Event()

    def chatter() -> None:
        while not stop.is_set():
            writer.queue.append((records.UNNUMBERED, records.LOG, time.time(), "stdout", "still here"))

    producer = threading.Thread(target=chatter, daemon=True)
    producer.start()
    try:
        assert writer.flush(30)
        assert producer.is_alive()  # flush returned while the producer still ran
    finally:
        stop.set()
        producer.join()
    assert writer.close(30)
    assert [r["x"] for r in _read_spool(tmp_path / "run", "w1") if type(r) is dict] == [1.0]
