"""The writer puts every record straight into a mapped segment: producers on any thread, segments
that fill up, and a disk that refuses a write at any point all leave every record in the spool,
exactly once, in each producer's order."""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
from tests.flow.test_execution import wait_for

from runyard.ingest import columns
from runyard.ingest.tailer import Tailer
from runyard.sdk import writer as writer_module
from runyard.sdk.writer import Writer
from runyard.spool import records, segment
from runyard.spool.segment import read_header, scan, segments_of

RUN = "01AAAAAAAAAAAAAAAAAAAAAAAA"


class CollectingSink:
    """A sink that keeps what it is given (past its cursor), as the store would."""

    def __init__(self) -> None:
        self.records: list[Any] = []

    def cursor(self, run_id: str, writer: str) -> int:
        return records.seq_of(self.records[-1]) if self.records else -1

    def apply(self, run_dir: Path, run_id: str, writer: str, recs: list[Any], cursor: int) -> tuple[int | None, int]:
        fresh = [r for r in columns.to_records(recs) if records.seq_of(r) > cursor]
        self.records.extend(fresh)
        return 1, records.seq_of(fresh[-1]) if fresh else cursor

    def mark_lost(self, run_id: str, message: str) -> bool:
        return False

    def heartbeat(self, run_id: str) -> float | None:
        return None

    def make_durable(self) -> None:
        pass


def ingested(spool: Path) -> list[Any]:
    sink = CollectingSink()
    Tailer(sink, spool, None, retire=False).poll()
    return sink.records


def steps(recs: list[Any], key: str = "x") -> list[int]:
    return [int(r[records.STEP]) for r in recs if type(r) is dict and key in r]


@pytest.fixture
def small_segments(monkeypatch: pytest.MonkeyPatch) -> None:
    """Segments of 4 KiB growing to 16 KiB: a few thousand records cross many of them."""
    monkeypatch.setattr(segment, "FIRST_SEGMENT_BYTES", 4096)
    monkeypatch.setattr(segment, "SEGMENT_BYTES", 16384)


def test_records_from_many_threads_reach_the_spool_once_each_in_each_threads_order(
        tmp_path: Path, small_segments: None) -> None:
    writer = Writer(tmp_path / RUN, RUN, "w1", tick=0.005)
    writer.start()

    def produce(key: str) -> None:
        for step in range(3000):
            writer.queue.extend(({key: float(step)}, records.UNNUMBERED, time.time(), step))

    threads = [threading.Thread(target=produce, args=(f"t{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert writer.close(10)
    recs = ingested(tmp_path)
    for i in range(4):
        assert steps(recs, f"t{i}") == list(range(3000))
    seqs = [records.seq_of(r) for r in recs]
    assert seqs == sorted(set(seqs))  # a record's number is its place in the spool: unique, increasing
    assert len(segments_of(tmp_path / RUN)["w1"]) > 5  # it crossed many segments


def test_a_value_msgpack_cannot_pack_costs_neither_its_record_nor_close(tmp_path: Path) -> None:
    from decimal import Decimal

    import numpy as np

    writer = Writer(tmp_path / RUN, RUN, "w1")
    writer.start()
    writer.queue.extend(({"x": 1.0}, records.UNNUMBERED, time.time(), 0))
    writer.queue.append((records.UNNUMBERED, records.CONFIG, time.time(), {"lr": Decimal("0.1"), "n": np.array(3)}))
    writer.queue.extend(({"x": 2.0}, records.UNNUMBERED, time.time(), 1))
    assert writer.close(10)
    recs = ingested(tmp_path)
    assert [r["x"] for r in recs if type(r) is dict] == [1.0, 2.0]
    assert [r[3] for r in recs if type(r) is not dict] == [{"lr": "0.1", "n": 3}]


def test_close_returns_while_a_producer_still_writes(tmp_path: Path) -> None:
    # A supervisor's pipe reader fed by a daemon the script left behind keeps writing log lines.
    writer = Writer(tmp_path / RUN, RUN, "w1")
    writer.start()
    writer.queue.extend(({"x": 1.0}, records.UNNUMBERED, time.time(), 0))
    stop = threading.Event()

    def chatter() -> None:
        while not stop.is_set():
            writer.queue.append((records.UNNUMBERED, records.LOG, time.time(), "stdout", "still here"))

    producer = threading.Thread(target=chatter, daemon=True)
    producer.start()
    try:
        assert writer.close(30)
        assert producer.is_alive()
    finally:
        stop.set()
        producer.join()
    assert [r["x"] for r in ingested(tmp_path) if type(r) is dict] == [1.0]


def test_a_forked_child_writes_nothing_into_the_parents_segment(tmp_path: Path) -> None:
    writer = Writer(tmp_path / RUN, RUN, "w1")
    writer.start()
    writer.queue.extend(({"x": 0.0}, records.UNNUMBERED, time.time(), 0))
    pid = os.fork()
    if pid == 0:  # the child: its copy of the writer's position is stale
        try:
            for step in range(100):
                writer.queue.extend(({"x": -1.0}, records.UNNUMBERED, time.time(), step))
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    for step in range(1, 100):
        writer.queue.extend(({"x": float(step)}, records.UNNUMBERED, time.time(), step))
    assert writer.close(10)
    assert [r["x"] for r in ingested(tmp_path) if type(r) is dict] == [float(s) for s in range(100)]


class FailingOs(types.ModuleType):
    """``os`` for the segment module, failing chosen calls the way a full or failing disk does."""

    CALLS = ("open", "posix_fallocate", "pwrite", "ftruncate", "fsync")

    def __init__(self, fail_at: int = -1, failures: int = 1, error: int = errno.ENOSPC) -> None:
        super().__init__("os")
        self.__dict__.update({k: getattr(os, k) for k in dir(os) if not k.startswith("__")})
        self.count = 0
        self.fail_at = fail_at
        self.failures = failures
        self.error = error
        self.lock = threading.Lock()
        for name in self.CALLS:
            setattr(self, name, self._wrap(getattr(os, name)))

    def fill(self) -> None:
        """From now on every call fails, as on a full disk."""
        with self.lock:
            self.fail_at, self.failures = self.count + 1, 10**9

    def free(self) -> None:
        """Space again: no call fails from now on."""
        with self.lock:
            self.fail_at = 10**9

    def _wrap(self, real: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            with self.lock:
                self.count += 1
                failing = self.fail_at <= self.count < self.fail_at + self.failures
            if failing:
                raise OSError(self.error, os.strerror(self.error))
            return real(*args, **kwargs)

        return call


@contextlib.contextmanager
def faulty_disk(fake: FailingOs) -> Iterator[None]:
    """The segment module's system calls (and its mmap) go through ``fake`` meanwhile."""
    real_os, real_mmap = segment.os, segment.mmap.mmap

    def failing_mmap(*args: Any, **kwargs: Any) -> Any:
        with fake.lock:
            fake.count += 1
            failing = fake.fail_at <= fake.count < fake.fail_at + fake.failures
        if failing:
            raise OSError(errno.ENOMEM, "cannot map")
        return real_mmap(*args, **kwargs)

    segment.os, segment.mmap.mmap = fake, failing_mmap  # type: ignore[assignment, misc]
    try:
        yield
    finally:
        segment.os, segment.mmap.mmap = real_os, real_mmap  # type: ignore[misc]


def log_through_faults(directory: Path, fake: FailingOs, count: int) -> None:
    with faulty_disk(fake):
        writer = Writer(directory, RUN, "w1", tick=0.002, queue_limit=count + 10)
        problems: list[str] = []
        writer.on_problem = problems.append
        writer.start()
        for step in range(count):
            writer.queue.extend(({"x": float(step)}, records.UNNUMBERED, time.time(), step))
            if step % 200 == 0:
                time.sleep(0.003)  # the keeper runs between bursts, as it would between training steps
        assert writer.close(20), (fake.count, problems, writer.last_error)


def test_a_disk_that_refuses_any_one_write_loses_no_record(tmp_path: Path, small_segments: None) -> None:
    count = 1500
    clean = FailingOs()
    log_through_faults(tmp_path / "clean" / RUN, clean, count)
    calls = clean.count
    assert calls > 20  # the scenario crosses several segments: creations, seals, closes, syncs
    for k in range(1, calls + 1):
        for failures in (1, 5):  # one write refused; the disk full for a while, then space again
            spool = tmp_path / f"k{k}-{failures}"
            log_through_faults(spool / RUN, FailingOs(k, failures), count)
            assert steps(ingested(spool)) == list(range(count)), (k, failures)


def test_records_wait_in_memory_while_the_disk_is_full_and_none_is_said_safe_that_is_not(
        tmp_path: Path, small_segments: None, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FailingOs(fail_at=10**9)
    with faulty_disk(fake):  # restored even when an assertion fails: later tests get a sound disk
        writer = Writer(tmp_path / RUN, RUN, "w1", tick=0.002, queue_limit=500)
        problems: list[str] = []
        writer.on_problem = problems.append
        writer.start()
        # The keeper makes its spare segments before the disk fills: one it was still making then
        # would take held records later, and fewer than queue_limit would wait in memory.
        wait_for(lambda: len(writer._spares) == writer._spares_wanted(), 10, "the keeper's spare segments")
        fake.fill()  # from now on the disk takes nothing
        for step in range(2000):
            writer.queue.extend(({"x": float(step)}, records.UNNUMBERED, time.time(), step))
        assert writer.pending() == 500 and writer.lost_records > 0
        wait_for(lambda: any("training continues" in p for p in problems), 10, "the keeper's first failed attempt")
        assert any("cannot create a spool segment" in p and "training continues" in p for p in problems)
        assert any("being lost" in p for p in problems)
        assert not writer.flush(0.2)  # never says everything is written while it is not
        fake.free()  # space again
        assert not writer.close(5)  # what was lost stays lost: close says so
    recs = steps(ingested(tmp_path))
    assert len(recs) == 2000 - writer.lost_records and recs == sorted(set(recs))
    assert any("written again" in p for p in problems)


def test_records_logged_while_held_records_are_written_again_come_after_them(tmp_path: Path) -> None:
    fake = FailingOs(fail_at=10**9)
    with faulty_disk(fake):
        writer = Writer(tmp_path / RUN, RUN, "w1", tick=0.002, queue_limit=300_000)
        writer.on_problem = lambda message: None
        writer.start()
        fake.fill()  # the disk takes nothing now
        held = 150_000
        for step in range(held):  # the first segment fills, then the rest waits in memory
            writer.queue.extend(({"x": float(step)}, records.UNNUMBERED, time.time(), step))
        assert writer.pending() > 100_000
        fake.free()  # space again: the keeper writes the held records back meanwhile
        for step in range(held, held + 100_000):  # training goes on during that
            writer.queue.extend(({"x": float(step)}, records.UNNUMBERED, time.time(), step))
        assert writer.close(20)
    assert steps(ingested(tmp_path)) == list(range(held + 100_000))  # in the order logged


def test_a_call_that_met_the_full_disk_does_not_put_a_recovered_writer_back_on_hold(tmp_path: Path) -> None:
    # A producer that read where to write while the disk was full, and got the lock only after the
    # keeper had resumed: its frame goes into the current segment, not back into memory, where it
    # would wait for a new segment that a nearly full disk may never give.
    fake = FailingOs(fail_at=10**9)
    with faulty_disk(fake):
        writer = Writer(tmp_path / RUN, RUN, "w1", tick=0.5, queue_limit=100_000)
        writer.on_problem = lambda message: None
        writer.start()
        fake.fill()
        step = 0
        while writer.pending() == 0:  # until the first segment is full
            writer.queue.extend(({"x": float(step)}, records.UNNUMBERED, time.time(), step))
            step += 1
        stale = writer.put  # where a producer writes while the disk refuses
        fake.free()
        wait_for(lambda: writer.pending() == 0, 10, "the keeper to write the held records")
        wait_for(lambda: writer.put != stale, 10, "the writer to write directly again")
        fake.fill()  # no room for another segment
        for _ in range(2):  # two producers: the first would take the spare, the second none
            stale(segment.encode_frame(msgpack.packb(({"x": float(step)}, 0, time.time(), step))))
            step += 1
            assert writer.pending() == 0  # in the spool at once
        assert writer.close(2)
    assert steps(ingested(tmp_path)) == list(range(step))


def test_sequence_numbers_are_addresses(tmp_path: Path) -> None:
    writer = Writer(tmp_path / RUN, RUN, "w1")
    writer.start()
    writer.queue.extend(({"x": 1.0}, records.UNNUMBERED, time.time(), 0))
    writer.queue.append((records.UNNUMBERED, records.NOTE, time.time(), "hello"))
    assert writer.close(10)
    recs = ingested(tmp_path)
    data = (tmp_path / RUN / "w1-000000.seg").read_bytes()
    header = read_header(data)
    assert header is not None
    found = scan(memoryview(data)[header.size :], header.size, 2, final=True, eof=True)
    assert [records.seq_of(r) for r in recs] == [offset for offset, _ in found.frames]


def _page_faults_of_this_thread() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_THREAD).ru_minflt


def test_syncing_the_spool_leaves_the_pages_ahead_of_log_writable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fsync thread forces what was written, not the pages the keeper faulted in ahead of it:
    forcing the whole file wrote those back too, the kernel write-protected them, and the thread
    calling log() took a page fault on nearly every new page all the same."""
    monkeypatch.setitem(writer_module.SYNC_EVERY, "always", 0.02)
    writer = Writer(tmp_path / RUN, RUN, "w1", fsync="always", tick=0.01)
    writer.start()
    wait_for(lambda: writer._prefaulted > (1 << 19), timeout=10)  # the keeper has faulted a window in
    frame = writer_module.encode(({"x": 1.0, "pad": "p" * 440}, records.UNNUMBERED, time.time(), 0))
    pages = (600 << 10) // 4096  # within the first 1 MiB segment: no roll, no new segment to fault in
    faults_before = _page_faults_of_this_thread()
    written = 0
    while written < pages * 4096:
        for _ in range(20):
            writer.write(frame)
            written += len(frame)
        time.sleep(0.004)  # about 0.5 s in all: the fsync thread syncs some 25 times meanwhile
    faults = _page_faults_of_this_thread() - faults_before
    assert writer.close(5)
    assert faults < pages // 5, f"{faults} page faults while writing {pages} pages"


def test_while_segments_are_small_two_are_ready_so_a_late_keeper_holds_nothing_in_memory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """At millions of points a second the first segments (1 MiB, then 2, 4...) fill in milliseconds:
    a keeper that waits for the training thread's GIL to make the next one must not make log() hold
    records in memory, where a SIGKILL loses them. Two spares are ready while segments are small."""
    writer = Writer(tmp_path / RUN, RUN, "w1")
    writer.start()
    wait_for(lambda: len(segments_of(tmp_path / RUN).get("w1", [])) >= 3, 10, "two spare segments")
    monkeypatch.setattr(writer, "_keep_once", lambda: None)  # the keeper falls behind from here
    frame = writer_module.encode(({"x": 0.5, "y": 1.5}, records.UNNUMBERED, time.time(), 7))
    first, second = segment.segment_capacity(0), segment.segment_capacity(1)
    count = (first + second) // len(frame) + 1000  # the first segment and one spare cannot hold them
    for _ in range(count):
        writer.write(frame)
    assert writer.peak_held == 0 and writer.pending() == 0
    monkeypatch.undo()
    assert writer.close(10)
    assert len([r for r in ingested(tmp_path) if type(r) is dict]) == count
