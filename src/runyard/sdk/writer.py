"""The spool writer: every record goes straight into a memory-mapped spool segment.

A producer (``run.log()``, the tee, the sampler, a supervisor's pipe readers) encodes its record as
one checksummed frame and copies it into the current segment's shared mapping with ``put`` (the
mapping's own ``write``: one C call, atomic with respect to other Python threads, so no lock). When
``put`` returns, the record is in the kernel's page cache: a process killed a moment later loses
nothing, whatever else the machine is doing, and no writer thread stands between ``log()`` and the
file. See spool/segment.py for the format.

``put`` raises ValueError when the frame does not fit; the producer then calls ``full``, which
seals the segment and goes on in the spare. The **keeper** thread does what must never happen
inside ``log()``: it keeps a spare segment ready, two while segments are small (creating one
reserves disk blocks, which can wait on the disk), faults in the pages ahead of the write
position (so ``log()`` rarely takes a page fault), closes full segments, converts tensors that
were logged as values (``defer``), and writes the heartbeat. A second thread fsyncs, per the
``fsync`` policy.

When no segment can be made (a full or failing disk), records wait in memory, up to
``queue_limit``, and the keeper writes them, in order, as soon as the disk takes a new segment;
records beyond the limit are counted in ``lost_records`` and the run says so. The run's stderr
gets one line when the trouble starts and one when it ends; nothing is said to be safe unless it is
in a segment.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
import threading
import time
import weakref
import zlib
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runyard.spool import records
from runyard.spool import segment as segment_format
from runyard.spool.rundir import lock_writer
from runyard.spool.segment import (
    FRAME,
    MARK,
    MappedSegment,
    address,
    create_segment,
    scan,
    segment_capacity,
)

#: How often the keeper looks at the segment. Each look costs the training thread a GIL hand-over,
#: so it is rare; the prefault window is sized to last longer than this at full speed. Whatever
#: cannot wait a tick (a full segment, flush, close) wakes the keeper at once.
KEEPER_TICK = 0.2
#: Bytes ahead of the write position that the keeper faults in (at least; see ``_prefault``).
PREFAULT_BYTES = 1 << 20
#: Deferred values (tensors) waiting longer than this are converted and written.
DEFER_INTERVAL = 0.1
#: Seconds between fsyncs under the policies that sync.
SYNC_EVERY = {"always": 0.1, "interval": 1.0}
#: Linux's MADV_POPULATE_WRITE (5.14+): fault pages in writable, as a write would.
_MADV_POPULATE_WRITE = 23
#: msync's flag to write the range back and wait (Linux's value).
_MS_SYNC = 4

_pack_frame = FRAME.pack
_adler32 = zlib.adler32


def frame_of(payload: bytes) -> bytes:
    return _pack_frame(MARK, len(payload), _adler32(payload)) + payload


def encode(record: Any) -> bytes:
    """One record as a frame. Not the hot path (``Run.log`` encodes metrics itself)."""
    import msgpack

    return frame_of(msgpack.packb(record, use_bin_type=True, default=_plain))


class _Producer:
    """What producers other than ``log()`` write through: ``append`` takes a record tuple, ``extend``
    a metrics group (map, seq, time, step) as spool/records.py describes them."""

    def __init__(self, writer: Writer) -> None:
        self._writer = writer

    def append(self, record: tuple[Any, ...]) -> None:
        self._writer.write(encode(record))

    def extend(self, group: tuple[Any, ...] | list[Any]) -> None:
        self._writer.write(encode(tuple(group)))


class Writer:
    """Owns a run's spool segments (one writer id) and the threads that keep them."""

    def __init__(
        self,
        directory: Path,
        run_id: str,
        writer_id: str,
        fsync: str = "interval",
        queue_limit: int = 100_000,
        heartbeat_interval: float = 5.0,
        clock: Callable[[], float] = time.time,
        tick: float = KEEPER_TICK,
    ) -> None:
        self.directory = directory
        self.run_id = run_id
        self.writer_id = writer_id
        self.fsync = fsync
        #: Records held in memory at most while no segment can be written.
        self.queue_limit = queue_limit
        self.heartbeat_interval = heartbeat_interval
        self.clock = clock
        self.tick = tick
        #: Write one frame: the current segment's ``write`` (raises ValueError when full: call
        #: ``full``), or while no segment can be written, the method that holds frames in memory.
        self.put: Callable[[bytes], object] = self._hold
        #: Producers' surface for record tuples and metrics groups (see ``_Producer``).
        self.queue = _Producer(self)
        #: Tensors logged as values wait here to be converted off the training thread (``defer``).
        self.deferring = False
        self._deferred: deque[tuple[dict[str, Any], float, int]] = deque()
        self._deferred_since = 0.0
        self._held: deque[bytes] = deque()
        #: Records given up because memory was full while the disk refused them.
        self.lost_records = 0
        #: Records held in memory at most at once (diagnostics).
        self.peak_held = 0
        #: Records producers wrote after close() (they go nowhere).
        self.late_records = 0
        #: Failures the writer survived (a full disk, say); the last one is kept.
        self.failures = 0
        self.last_error: BaseException | None = None
        #: Called with a sentence for the user when writing runs into trouble and when it recovers.
        self.on_problem: Callable[[str], object] = _to_stderr
        #: Called from the keeper at every heartbeat (the SDK restarts a dead agent with it).
        self.on_heartbeat: Callable[[], object] | None = None
        self._lock = threading.Lock()  # roll, hold, resume, close: never taken by ``put``
        self._converting = threading.Lock()
        self._fd_lock = threading.Lock()  # keeps fsync of the current segment apart from its closing
        self._segment: MappedSegment | None = None
        #: Segments made ahead, in index order: the next one ``log()`` goes on in.
        self._spares: deque[MappedSegment] = deque()
        self._next_index = 0
        self._need = 0
        self._retired: list[MappedSegment] = []
        self._closed_at: int | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock_fd = -1
        self._last_heartbeat = 0.0
        self._prefaulted = 0
        self._madvise: Callable[[MappedSegment, int, int], None] | None = None
        self._msync: Callable[[MappedSegment, int, int], None] | None = None
        self._trouble_since: float | None = None
        self._notices: list[tuple[float, str]] = []
        self._announced = False
        self._flush_requested = False
        self._latest: dict[str, float] = {}
        self._latest_at = (0, -1)

    # -- life -------------------------------------------------------------------------------------

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_fd = lock_writer(self.directory, self.writer_id)
        self._last_heartbeat = self.clock()
        try:
            segment = self._new_segment()
        except OSError as e:
            self._failed(e, "cannot create a spool segment")
            self._trouble_since = time.monotonic()
        else:
            with self._lock:
                self._switch_to(segment)  # there is no segment to seal yet: cannot fail
        loops = [(self._keep, "runyard-keeper"), (self._sync_loop, "runyard-fsync")]
        for target, name in loops:
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _forget(ref))

    def write(self, frame: bytes) -> None:
        """Write one frame (any thread)."""
        try:
            self.put(frame)
        except ValueError:
            self.full(frame)

    def full(self, frame: bytes) -> None:
        """The current segment has no room for ``frame``: seal it and go on in the spare, or hold
        the frame in memory until the keeper can make a segment."""
        with self._lock:
            self._write_locked(frame)  # another thread may have rolled meanwhile: then it just fits
        self._wake.set()

    def _write_locked(self, frame: bytes) -> None:
        put = self.put
        if put == self._hold:
            self._hold_locked(frame)
            return
        if put == self._after_close:
            put(frame)
            return
        try:
            put(frame)
            return
        except ValueError:
            pass
        spare = self._spares[0] if self._spares else None
        if spare is not None and spare.capacity >= len(frame) and self._switch_to(spare):
            self._spares.popleft()
            spare.write(frame)
        else:
            self._need = max(self._need, len(frame))
            self._hold_locked(frame)

    def defer(self, metrics: dict[str, Any], when: float, step: int) -> None:
        """Queue a metrics map holding tensors; the keeper converts them in batches (one device
        synchronisation per batch, off the training thread) and writes the record. While any wait,
        ``log()`` defers every record, so the spool keeps the order in which they were logged."""
        with self._lock:
            deferred = self._deferred
            if not deferred:
                self._deferred_since = time.monotonic()
            deferred.append((metrics, when, step))
            self.deferring = True
            full = len(deferred) >= self.queue_limit
        if full:  # conversion cannot keep up: memory stays bounded, the caller waits for it this once
            self._convert_deferred()

    def flush(self, timeout: float) -> bool:
        """Write what waits (deferred tensors, records held while the disk refused them) within
        ``timeout``; True if everything logged so far is in a segment."""
        deadline = time.monotonic() + timeout
        self._flush_requested = True
        while True:
            if not self._deferred and not self._held:
                return self.lost_records == 0
            if time.monotonic() >= deadline or not any(t.is_alive() for t in self._threads[:1]):
                return False
            self._wake.set()
            time.sleep(min(0.02, max(0.0, deadline - time.monotonic())))

    def close(self, timeout: float) -> bool:
        """Write what waits (within ``timeout``), close the segments, release the writer's lock.
        True if every record logged is in the spool."""
        done = self.flush(timeout)
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout=max(timeout, 1.0))
        with self._lock:
            self.put = self._after_close
            done = done and not self._held and self.lost_records == 0
            segment, spares, retired = self._segment, list(self._spares), self._retired
            self._segment, self._retired = None, []
            self._spares.clear()
            if segment is not None:
                self._closed_at = address(segment.index, segment.used)
            else:
                self._closed_at = 0
        for old in [*retired, *([segment] if segment is not None else [])]:
            try:
                old.close(sync=self.fsync != "never")
            except (OSError, BufferError) as e:  # the records are in the page cache all the same
                self._record(e)
        for spare in spares:
            with contextlib.suppress(OSError, BufferError):
                spare.discard()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # releases the flock: ingest now knows this writer is done
            self._lock_fd = -1
        return done

    # -- what the run reads -------------------------------------------------------------------------

    def position(self) -> int:
        """Where the spool ends now, as an address (spool/segment.py): ingest has everything logged
        so far once its acknowledged position reaches this."""
        with self._lock:
            if self._closed_at is not None:
                return self._closed_at
            segment = self._segment
            return address(segment.index, segment.used) if segment is not None else 0

    def pending(self) -> int:
        """Records logged but not in a segment yet (held or deferred)."""
        return len(self._held) + len(self._deferred)

    def latest_metrics(self) -> dict[str, float]:
        """Each metric's last logged value (read back from this writer's own segments, so that
        ``log()`` pays nothing for it), deferred records included."""
        import msgpack

        from runyard.spool.segment import segment_name

        with self._lock:
            index, offset = self._latest_at
            last = self._segment.index if self._segment is not None else index
            while index <= last:
                path = self.directory / segment_name(self.writer_id, index)
                try:
                    data = path.read_bytes()
                except FileNotFoundError:
                    break
                if offset < 0:
                    from runyard.spool.segment import read_header

                    header = read_header(data)
                    if header is None:
                        break
                    offset = header.size
                found = scan(memoryview(data)[offset:], offset, 2, final=False, eof=True)
                for _, payload in found.frames:
                    record = msgpack.unpackb(payload, strict_map_key=False)
                    if type(record[0]) is dict:
                        self._latest.update(record[0])
                offset = found.end
                if not found.closed:
                    break
                index, offset = index + 1, -1
            self._latest_at = (index, offset)
            latest = dict(self._latest)
            for metrics, _, _ in self._deferred:
                latest.update(metrics)
        return {k: v for k, v in latest.items() if not k.startswith("system/")}

    # -- segments -----------------------------------------------------------------------------------

    def _new_segment(self) -> MappedSegment:
        """The next segment (keeper, or ``start`` before the keeper runs: one thread makes them, so
        indexes have no gaps, and the reader's chain from END to the next index never breaks)."""
        index = self._next_index
        segment = create_segment(self.directory, self.run_id, self.writer_id, index,
                                 segment_capacity(index, self._need + FRAME.size))
        self._next_index = index + 1
        return segment

    def _switch_to(self, segment: MappedSegment, live: bool = True) -> bool:
        """Seal the current segment and make ``segment`` the current one, where ``put`` writes from
        now on unless not ``live`` (the caller first writes what is held); False (nothing changed
        but the old segment refusing writes) if the seal failed. Caller holds the lock."""
        old = self._segment
        if old is not None:
            try:
                old.seal()
            except OSError as e:  # without its END frame, the reader would never reach ``segment``
                self._failed(e, "cannot close a full spool segment")
                return False
            self._retired.append(old)
        self._segment = segment
        self._prefaulted = segment.start
        if live:
            self.put = segment.write
        return True

    def _hold(self, frame: bytes) -> None:
        with self._lock:
            # The keeper may have resumed while this caller waited for the lock (it read ``put``
            # before): then the frame goes where ``put`` now points, not back into memory.
            self._write_locked(frame)

    def _hold_locked(self, frame: bytes) -> None:
        if self.put != self._hold:
            self.put = self._hold
            if self._trouble_since is None:
                self._trouble_since = time.monotonic()
        if len(self._held) >= self.queue_limit:
            if self.lost_records == 0:
                self._problem(f"the spool of run {self.run_id} cannot be written and {self.queue_limit:,} records "
                                "wait in memory (queue_limit): further records are being lost until space is "
                                f"freed in {self.directory}")
            self.lost_records += 1
            return
        self._held.append(frame)
        self.peak_held = max(self.peak_held, len(self._held))

    def _resume(self) -> None:
        """Keeper only: write the held frames into a new segment and go back to writing directly."""
        if self.put != self._hold:
            return
        with self._lock:
            segment = self._spares.popleft() if self._spares else None
        if segment is None:
            try:
                segment = self._new_segment()
            except OSError as e:
                self._failed(e, "cannot create a spool segment")
                return
        with self._lock:
            if self._closed_at is not None:
                segment.discard()
                return
            # Held frames first, while ``put`` still holds: a producer's next frame waits for the
            # lock and comes after them, so the spool keeps the order in which they were logged.
            if not self._switch_to(segment, live=False):
                self._spares.appendleft(segment)  # kept for when the seal goes through
                return
            held = self._held
            while held:
                try:
                    segment.write(held[0])
                except ValueError:
                    self._need = max(self._need, len(held[0]))
                    return  # the rest waits for the next segment
                held.popleft()
            self.put = segment.write
            if self._trouble_since is not None and self._announced:
                lost = f"; {self.lost_records:,} records were lost while memory was full" if self.lost_records else ""
                self._problem(f"the spool of run {self.run_id} is written again; every record held in memory "
                                f"is in it now{lost}")
            self._trouble_since = None
            self._announced = False

    def _failed(self, error: OSError, what: str) -> None:
        self._record(error)
        if not self._announced:
            self._announced = True
            self._problem(f"{what} in {self.directory} ({error.strerror or error}); records wait in memory "
                            f"(up to {self.queue_limit:,}) until the disk takes them; training continues")

    def _record(self, error: BaseException) -> None:
        self.failures += 1
        self.last_error = error

    def _problem(self, message: str) -> None:
        """Say it now (stderr), and in the run's log once the spool takes it (the keeper writes it:
        this may be called with the lock held, or while the disk refuses everything)."""
        self.on_problem(message)
        self._notices.append((time.time(), f"runyard: {message}"))

    def _after_close(self, frame: bytes) -> None:
        self.late_records += 1  # a producer still writing after close() (a daemon's output, say)

    # -- the keeper ---------------------------------------------------------------------------------

    def _keep(self) -> None:
        while True:
            stopping = self._stop.is_set()
            try:
                self._keep_once()
            except Exception as e:  # noqa: BLE001 - the keeper must outlive any one failure
                self._record(e)
            if stopping:
                return
            self._wake.wait(self.tick)
            self._wake.clear()

    def _keep_once(self) -> None:
        self._resume()
        while len(self._spares) < self._spares_wanted() and self._closed_at is None and self.put != self._hold:
            try:
                spare = self._new_segment()
            except OSError as e:
                self._record(e)  # tried again next tick; log() holds frames only if this persists
                break
            with self._lock:
                if self._closed_at is None:
                    self._spares.append(spare)
                else:
                    spare.discard()
        self._prefault()
        flush, self._flush_requested = self._flush_requested, False
        self._convert_deferred(only_if_due=not flush)
        self._heartbeat()
        while self._notices and self.put != self._hold:  # not into memory meant for records
            when, text = self._notices.pop(0)
            self.write(encode((records.UNNUMBERED, records.LOG, when, "system", text)))

    def _spares_wanted(self) -> int:
        """Two spares while segments are small: at millions of points a second a 1 or 2 MiB segment
        fills in milliseconds, less than the keeper may wait for the GIL to make the next one."""
        return 2 if segment_capacity(self._next_index) < segment_format.SEGMENT_BYTES else 1

    def _prefault(self) -> None:
        """Fault in the pages just ahead of the write position, so that ``log()`` does not take the
        page faults itself (a fault on a new page of a file mapping costs microseconds)."""
        segment = self._segment
        if segment is None:
            return
        try:
            position = segment.tell()
            window = max(PREFAULT_BYTES, 2 * (position - self._prefaulted))
            start = max(self._prefaulted, position) & ~(mmap_page() - 1)
            end = min(len(segment.mapping), position + window)
        except ValueError:
            return  # closed under us: the next tick sees the new segment
        if end <= start:
            return
        if self._madvise is None:
            self._madvise = _madvise_function()
        try:
            self._madvise(segment, start, end - start)
        except OSError:
            self._madvise = _no_madvise  # not supported here: log() takes its own faults
        self._prefaulted = end

    def _heartbeat(self) -> None:
        now = self.clock()
        if now - self._last_heartbeat >= self.heartbeat_interval:
            self._last_heartbeat = now
            self.write(encode((records.UNNUMBERED, records.HEARTBEAT, now)))
            if self.on_heartbeat is not None:
                self.on_heartbeat()

    def _convert_deferred(self, only_if_due: bool = False) -> None:
        """Turn tensors into numbers, in one batch, and write their records in the order logged."""
        with self._converting:  # one converter at a time (the keeper, or a caller over the limit)
            self._convert_deferred_now(only_if_due)

    def _convert_deferred_now(self, only_if_due: bool) -> None:
        import msgpack

        with self._lock:
            if not self._deferred:
                self.deferring = False
                return
            if only_if_due and time.monotonic() - self._deferred_since < DEFER_INTERVAL:
                return
            batch = list(self._deferred)
            self._deferred.clear()
        values = to_floats([v for metrics, _, _ in batch for v in metrics.values() if type(v) is not float])
        frames = []
        for metrics, when, step in batch:
            record = {}
            for key, value in metrics.items():
                if type(value) is float:
                    record[key] = value
                    continue
                number = values.get(id(value))
                if number is None:
                    self._record(TypeError(f"run.log(): metric {key!r} could not be read as a number"))
                    continue
                record[key] = number
            if record:
                frames.append(frame_of(msgpack.packb((record, 0, when, step), use_bin_type=True)))
        with self._lock:
            # Written under the lock that log() takes while deferring: nothing logged after these
            # can reach the spool before them.
            for frame in frames:
                self._write_locked(frame)
            if not self._deferred:
                self.deferring = False

    # -- fsync ----------------------------------------------------------------------------------------

    def _sync_loop(self) -> None:
        """fsync per the policy, and close sealed segments, apart from the keeper: on a busy disk
        an fsync can take seconds, and the keeper must keep a spare segment ready meanwhile."""
        every = SYNC_EVERY.get(self.fsync, 1.0)
        sync = self.fsync != "never"
        warned = False
        while not self._stop.wait(every):
            with self._lock:
                retired, self._retired = self._retired, []
                current = self._segment
            for segment in retired:
                try:
                    segment.close(sync=sync)
                except BufferError:
                    with self._lock:
                        self._retired.append(segment)  # the keeper is faulting pages in: next time
                except OSError as e:
                    self._record(e)
            if sync and current is not None:
                try:
                    with self._fd_lock:
                        if self._segment is current:
                            self._sync_written(current)
                except OSError as e:
                    self._record(e)
                    if not warned:
                        warned = True
                        self._problem(f"the disk reported an error syncing the spool of run {self.run_id} "
                                        f"({e.strerror or e}): a power cut could lose recent records")


    def _sync_written(self, segment: MappedSegment) -> None:
        """Force to disk what is written in the current segment, not the pages ahead of it: an
        fsync of the whole file would also write back the pages the keeper faulted in ahead
        (``_prefault``), and the kernel then write-protects them, so ``log()`` would take a fault
        on every new page all the same (about 170 a second at full speed, measured)."""
        if self._msync is None:
            self._msync = _msync_function() or _fsync_whole
        try:
            self._msync(segment, 0, segment.tell())
        except ValueError:
            return  # closed under us: its close() syncs it
        except OSError as e:
            if e.errno not in (errno.EINVAL, errno.ENOSYS):
                raise
            self._msync = _fsync_whole
            segment.sync()


def to_floats(values: list[Any]) -> dict[int, float]:
    """Numbers for values logged as tensors, keyed by ``id``: PyTorch tensors on one device in one
    ``stack`` (one synchronisation), anything else with ``.item()`` one by one."""
    out: dict[int, float] = {}
    torch_values = [v for v in values if type(v).__module__.startswith("torch")]
    if torch_values:
        with contextlib.suppress(Exception):
            import torch  # type: ignore[import-not-found]

            stacked = torch.stack([v.reshape(()) for v in torch_values]).double().cpu().tolist()
            out.update({id(v): float(x) for v, x in zip(torch_values, stacked, strict=True)})
    for value in values:
        if id(value) in out:
            continue
        try:
            out[id(value)] = float(value.item())
        except Exception:  # noqa: BLE001, S112 - the caller records what could not be read
            continue
    return out


def mmap_page() -> int:
    import mmap

    return mmap.PAGESIZE


def _madvise_function() -> Callable[[MappedSegment, int, int], None]:
    """madvise(MADV_POPULATE_WRITE) through ctypes, which releases the GIL while the kernel faults
    the pages in (the mapping's own madvise method holds it)."""
    return _mapping_call("madvise", _MADV_POPULATE_WRITE) or _no_madvise


def _msync_function() -> Callable[[MappedSegment, int, int], None] | None:
    """msync(MS_SYNC) of a range of a segment through ctypes (the GIL released while the disk
    works; the mapping's own flush method holds it); None where there is no such call."""
    return _mapping_call("msync", _MS_SYNC)


def _mapping_call(name: str, flag: int) -> Callable[[MappedSegment, int, int], None] | None:
    """libc's ``name(address, length, flag)`` over a range of a segment's mapping, as a function
    raising OSError; None off Linux or without libc."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        function = getattr(libc, name)
        function.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        function.restype = ctypes.c_int
    except (OSError, AttributeError):
        return None

    def call(segment: MappedSegment, start: int, length: int) -> None:
        anchor = ctypes.c_char.from_buffer(segment.mapping)  # an export: the mapping stays put meanwhile
        try:
            if function(ctypes.addressof(anchor) + start, length, flag) != 0:
                error = ctypes.get_errno()
                raise OSError(error, os.strerror(error))
        finally:
            del anchor

    return call


def _fsync_whole(segment: MappedSegment, start: int, length: int) -> None:
    segment.sync()


def _no_madvise(segment: MappedSegment, start: int, length: int) -> None:
    return None


def _forget(ref: weakref.ReferenceType[Writer]) -> None:
    """In a forked child, the parent's mappings are shared: nothing the child writes may land in
    them (it would overwrite the parent's records at the child's stale position)."""
    writer = ref()
    if writer is not None:
        writer.put = writer._after_close
        writer._threads = []


def _to_stderr(message: str) -> None:
    print(f"runyard: {message}", file=sys.__stderr__, flush=True)


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
