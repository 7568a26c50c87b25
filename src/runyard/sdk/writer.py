"""The writer thread: moves records from the run's in-memory queue into spool segments.

``run.log()`` extends ``Writer.queue`` (a deque: that takes no lock) by one record and returns.
This thread wakes every ``flush_interval`` (100 ms), or sooner when ``flush_records`` records wait,
pops the queue in frames of up to ``max_batch`` queue items (whole records; a log() call is four
items, see spool/records.py), packs each with one C call (msgpack), and appends the checksummed
frames to the segment with one write: a process killed after that loses nothing, because the bytes
are in the kernel. fsync follows the policy.

Memory stays bounded: if the queue grows past ``queue_limit`` (the writer is slow: a stalled disk, a
deliberately slowed sink in tests), a spill thread moves the excess, oldest first, into spill files
on disk; the writer later copies them into the segment in sequence order. Nothing is dropped.

Order is kept by one rule: records leave the queue only under ``_drain_lock``, and each drained
batch is appended to ``_pending`` (a FIFO of packed batches or spill files) under the same lock.
The writer writes ``_pending`` in order. ``log()`` never takes that lock and never waits on I/O.

Sequence numbers are given as records leave the queue, not as they enter it: producers (the
training thread, the sampler, the tee, the heartbeat) queue records with ``records.UNNUMBERED``. A
number taken by a producer before it appends could be overtaken by another thread's (a thread
switch between the two), and ingest skips any record at or below the last sequence number it
applied: a frame ending at 8 would lose 7. Numbering at the drain makes the spool's order and its
sequence numbers one and the same, and costs log() nothing.
"""

from __future__ import annotations

import contextlib
import itertools
import operator
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runyard.spool import records
from runyard.spool.rundir import lock_writer
from runyard.spool.segment import SegmentWriter, encode_frame, frame_payloads

SPILL_DIR = "spill"
#: Frames drained and written together when the writer has fallen behind.
MAX_FRAMES_PER_WRITE = 8
#: How often the writer looks at the queue's length between flushes.
POLL_INTERVAL = 0.01
#: Bounds on how often the spill thread looks at the queue's length (see ``Writer._spill_wait``).
SPILL_POLL_MIN = 0.02
SPILL_POLL_MAX = 0.25
#: Queue items a tight log() loop adds per second at most (four per call, ~1.5 million calls/s),
#: rounded up: the spill thread sleeps no longer than that rate needs to fill the headroom.
FASTEST_ITEMS_PER_S = 8_000_000


class Writer:
    """Owns a run's queue, its segments and the threads that fill them."""

    def __init__(
        self,
        directory: Path,
        run_id: str,
        writer_id: str,
        fsync: str = "interval",
        flush_interval: float = 0.1,
        max_batch: int = 10_000,
        flush_records: int = 10_000,
        queue_limit: int = 100_000,
        heartbeat_interval: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = directory
        self.run_id = run_id
        self.writer_id = writer_id
        self.fsync = fsync
        self.flush_interval = flush_interval
        self.max_batch = max_batch
        self.flush_records = flush_records
        #: Whether records arrived fast in the last interval (then the queue is watched closely).
        self._busy = False
        self.queue_limit = queue_limit
        # The queue holds items, not records: a log() call queues four (see records.py). Counting
        # records exactly would cost log() a counter; bounding items by four per record keeps
        # memory within the limit's intent for metrics, and within four times it for log lines.
        self._item_limit = queue_limit * 4
        self.heartbeat_interval = heartbeat_interval
        self.clock = clock
        #: Records waiting to be written (see records.py for the form). Producers only ever call
        #: ``queue.append`` (one tuple) or ``queue.extend`` (a metrics group), each atomic.
        self.queue: deque[Any] = deque()
        #: Highest sequence number written to the segment (the kernel has it).
        self.written_seq = -1
        #: The sequence number the next drained record gets in the spool (see the module docstring).
        self._spool_seq = 0
        #: Each metric's last value among the records that have left the queue (for run.summary).
        self.latest: dict[str, float] = {}
        #: Most queue items ever waiting in memory at once (a log() call is four; for diagnostics).
        self.peak_queued = 0
        #: Records moved to spill files because the writer fell behind.
        self.spilled_records = 0
        #: Failures the writer survived (a full disk, say); the last one is kept.
        self.failures = 0
        self.last_error: BaseException | None = None
        self._drain_lock = threading.Lock()
        self._pending: deque[tuple[bytes | Path, int]] = deque()
        self._written = threading.Condition()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._segment = SegmentWriter(directory, run_id, writer_id)
        self._lock_fd = -1
        self._threads: list[threading.Thread] = []
        self._last_heartbeat = 0.0
        self._spills = itertools.count()
        #: Called from the writer thread at every heartbeat (the SDK restarts a dead agent with it).
        self.on_heartbeat: Callable[[], object] | None = None

    # -- life -------------------------------------------------------------------------------------

    def start(self) -> None:
        (self.directory / SPILL_DIR).mkdir(parents=True, exist_ok=True)
        self._lock_fd = lock_writer(self.directory, self.writer_id)
        self._segment.open()
        self._last_heartbeat = self.clock()
        loops = [(self._write_loop, "runyard-writer"), (self._spill_loop, "runyard-spill")]
        if self.fsync == "interval":
            loops.append((self._sync_loop, "runyard-fsync"))
        for target, name in loops:
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def flush(self, timeout: float) -> bool:
        """Wait until every record queued before this call is in the segment; False on timeout."""
        target = self._drain_queued()
        deadline = time.monotonic() + timeout
        self._wake.set()
        with self._written:
            while self.written_seq < target:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._threads[0].is_alive():
                    return False
                self._written.wait(min(remaining, 0.05))
                self._wake.set()
        return True

    def close(self, timeout: float) -> bool:
        """Write what is queued (within ``timeout``), sync, release the writer's lock."""
        done = self.flush(timeout)
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout=max(timeout, 1.0))
        self._segment.close()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # releases the flock: ingest now knows this writer is done
            self._lock_fd = -1
        return done

    def latest_metrics(self) -> dict[str, float]:
        """Each metric's last logged value, queued records included."""
        with self._drain_lock:
            latest = dict(self.latest)
            for item in list(self.queue):
                if type(item) is dict:
                    latest.update(item)
        return {k: v for k, v in latest.items() if not k.startswith("system/")}

    def _drain_queued(self) -> int:
        """Move what is queued now into ``_pending`` (numbering it) and return its last sequence number:
        the number flush() waits for. Records queued after the call are left to the writer.
        """
        remaining = len(self.queue)  # what was queued at the call: producers may go on meanwhile
        while True:
            with self._drain_lock:  # released between frames: the writer and the spiller go on
                drained = self._drain(min(self.max_batch, remaining)) if remaining > 0 else None
                if drained is None:
                    return self._pending[-1][1] if self._pending else self.written_seq
                self._pending.append(drained[:2])
                remaining -= drained[3]

    # -- draining ---------------------------------------------------------------------------------

    def _drain(self, limit: int) -> tuple[bytes, int, int, int] | None:
        """Pop up to ``limit`` queue items (whole records) and pack them: (payload, last sequence
        number, records, items). Caller holds ``_drain_lock``."""
        import msgpack

        queue = self.queue
        count = min(len(queue), limit)
        if count == 0:
            return None
        popleft = queue.popleft
        # C-level loops throughout: the writer's Python work per record is time the training
        # thread waits for the GIL (see the module docstring).
        batch = list(itertools.starmap(popleft, itertools.repeat((), count)))
        while queue and not records.is_record_start(queue[0]):
            batch.append(popleft())  # finish the metrics group the count cut through
        # Kept here rather than in log(): the summary is read rarely, log() is called all the time.
        groups = batch[0::4]
        first = self._spool_seq
        if len(batch) % 4 == 0 and operator.countOf(map(type, groups), dict) == len(groups):
            # Only metrics groups (the usual batch): item 0 of each is its map, and no other item
            # of a group is a map, so counting maps at every fourth place proves the layout.
            maps = groups
            record_count = len(groups)
            batch[1::4] = range(first, first + record_count)
        else:
            maps = [item for item in batch if type(item) is dict]
            record_count = len(batch) - 3 * len(maps)  # a metrics record is four items, others one
            _renumber(batch, first)
        self._spool_seq = first + record_count
        deque(map(self.latest.update, maps), maxlen=0)
        # ``_plain`` is called only for a value msgpack cannot pack (a numpy scalar in a config, say):
        # it is kept in a plain form rather than the whole batch lost.
        payload = msgpack.packb(batch, use_bin_type=True, default=_plain)
        return payload, first + record_count - 1, record_count, len(batch)

    def _write_loop(self) -> None:
        while True:
            stopping = self._stop.is_set()
            self._wait_for_work()
            try:
                self._heartbeat()
                self._write_pending()
                if stopping:
                    self._segment.sync()
            except Exception as e:  # noqa: BLE001 - a full disk must not end the run: retry next time
                self.failures += 1
                self.last_error = e
                time.sleep(min(1.0, self.flush_interval * 5))
            if stopping and not self.queue and not self._pending:
                return

    def _wait_for_work(self) -> None:
        """Return after ``flush_interval``, or sooner once ``flush_records`` records are queued.

        Counting is the writer's job, not log()'s. While records arrive fast (a busy interval
        before), it looks at the queue's length every ``POLL_INTERVAL``; otherwise it sleeps the
        whole interval, since each look costs the training thread a GIL hand-over.
        """
        threshold = self.flush_records * 4  # a log() call queues four items
        if not self._busy:
            self._wake.wait(self.flush_interval)
        else:
            deadline = time.monotonic() + self.flush_interval
            while True:
                remaining = deadline - time.monotonic()
                if self._wake.wait(min(POLL_INTERVAL, max(remaining, 0.0))) or remaining <= 0:
                    break
                if len(self.queue) >= threshold:
                    break
        self._wake.clear()
        self._busy = len(self.queue) >= threshold // 8

    def _write_pending(self) -> None:
        while True:
            with self._drain_lock:
                # Drain the whole backlog (in frames of ``max_batch`` items, so no single C call
                # holds the GIL long) and write it with one system call: after a blocking call the
                # training thread may keep the GIL for 5 ms, so writes per frame would let a fast
                # loop outrun the writer.
                for _ in range(MAX_FRAMES_PER_WRITE - len(self._pending)):
                    drained = self._drain(self.max_batch)
                    if drained is None:
                        break
                    self._pending.append(drained[:2])
                if not self._pending:
                    return
                if isinstance(self._pending[0][0], Path):
                    batch = [self._pending[0]]
                else:
                    batch = list(itertools.takewhile(lambda entry: not isinstance(entry[0], Path), self._pending))
            head = batch[0][0]
            if isinstance(head, Path):
                payloads, _, _ = frame_payloads(head.read_bytes(), 0)
                self._segment.append_many(payloads)
            else:
                self._segment.append_many([payload for payload, _ in batch if isinstance(payload, bytes)])
            with self._drain_lock:
                for _ in batch:
                    self._pending.popleft()
            if isinstance(head, Path):
                head.unlink(missing_ok=True)
            with self._written:
                self.written_seq = batch[-1][1]
                self._written.notify_all()
            if self.fsync == "always":
                self._segment.sync()

    def _sync_loop(self) -> None:
        """fsync once a second (policy ``interval``), apart from the writer: on a busy disk an fsync
        can take longer than a flush interval, and the writer must keep moving records to the kernel."""
        while not self._stop.wait(1.0):
            try:
                self._segment.sync()
            except OSError as e:
                self.failures += 1
                self.last_error = e

    def _heartbeat(self) -> None:
        now = self.clock()
        if now - self._last_heartbeat >= self.heartbeat_interval:
            self._last_heartbeat = now
            self.queue.append((records.UNNUMBERED, records.HEARTBEAT, now))  # a tuple: rare
            if self.on_heartbeat is not None:
                self.on_heartbeat()

    # -- spilling ---------------------------------------------------------------------------------

    def _spill_wait(self, queued: int) -> float:
        """How long the spill thread may sleep: until a fast loop could fill the queue's headroom.

        Each wake-up costs the training thread a GIL hand-over, so it looks rarely while the queue
        is short, and every ``SPILL_POLL_MIN`` seconds once it nears its limit.
        """
        headroom = max(self._item_limit - queued, 0)
        return min(max(headroom / FASTEST_ITEMS_PER_S, SPILL_POLL_MIN), SPILL_POLL_MAX)

    def _spill_loop(self) -> None:
        queued = 0
        while not self._stop.wait(self._spill_wait(queued)):
            queued = len(self.queue)
            self.peak_queued = max(self.peak_queued, queued)
            if queued <= self._item_limit:
                continue
            with self._drain_lock:
                drained = self._drain(queued)
                if drained is None:
                    continue
                payload, last_seq, record_count, _ = drained
                path = self.directory / SPILL_DIR / f"{self.writer_id}-{next(self._spills):06d}.frame"
                try:
                    with path.open("wb") as f:
                        f.write(encode_frame(payload))
                    self._pending.append((path, last_seq))
                    self.spilled_records += record_count
                except OSError as e:  # cannot spill: keep the batch in memory rather than lose it
                    self.failures += 1
                    self.last_error = e
                    self._pending.append((payload, last_seq))
        with contextlib.suppress(OSError):
            (self.directory / SPILL_DIR).rmdir()


def _renumber(batch: list[Any], first: int) -> None:
    """Give the records in ``batch`` (queue items, whole records) the sequence numbers from ``first``."""
    i, n, seq = 0, len(batch), first
    while i < n:
        item = batch[i]
        if type(item) is dict:  # a metrics group: map, seq, time, step
            batch[i + 1] = seq
            i += 4
        else:
            batch[i] = (seq, *item[1:])
            i += 1
        seq += 1


def _plain(value: Any) -> Any:
    """A value msgpack does not know, as one it does: a numpy scalar or 0-d array as its Python
    number, anything else as its text."""
    item = getattr(value, "item", None)
    if callable(item):
        try:
            plain = item()
        except (TypeError, ValueError):
            return str(value)
        if isinstance(plain, bool | int | float | str | bytes) or plain is None:
            return plain
    return str(value)
