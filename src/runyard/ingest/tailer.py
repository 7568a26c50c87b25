"""Local ingest: follow run spools from their acknowledged positions into the store.

One pass (``Tailer.poll``) visits every run directory that targets this database, reads what each
writer appended since the last pass (in bounded chunks: memory does not grow with a backlog), applies
it, and acknowledges it. When a writer's lock is free (it finished, or died) and everything readable
is applied, the writer is complete: a torn tail is dropped and counted, corruption in the middle is
skipped and counted, and a run whose writer died without saying how it ended is marked lost, with
its last heartbeat.

Three rules keep the store and the spool in step:

* The store's cursor, not the ack file, says what is applied: the ack is written after the
  database commits, and SQLite (``synchronous=NORMAL``) may lose its last commits in a power cut.
  The first time a tailer meets a writer it compares the two and reads again what the store lacks.
* A record the store refuses for what it is (not because the store is away) is quarantined
  (ingest/quarantine.py), and the rest goes on: one bad record never stops other records or runs.
* A run whose writers are all complete is retired (moved to ``spool/retired/``) once its commits are
  on disk, so that a pass costs the same with ten or ten thousand finished runs behind it.
"""

from __future__ import annotations

import gc
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from runyard.errors import AccessDenied, RunyardError
from runyard.ingest import columns, quarantine
from runyard.ingest.columns import MetricColumns
from runyard.ingest.sink import Sink
from runyard.spool.acks import Ack, read_ack, write_ack
from runyard.spool.records import SEQ, STEP, TIME, seq_of, unflatten
from runyard.spool.rundir import retired_dir, run_dirs, target_of, writer_alive
from runyard.spool.segment import OFFSET_BITS, Block, Scan, ends_before, read_header, scan, segments_of

#: Records applied per transaction: bounds memory and keeps transactions short.
APPLY_CHUNK = 50_000
#: Bytes read from a live segment at first, and at most at a time.
FIRST_READ = 64 << 10
READ_CHUNK = 4 << 20
#: Frames decoded at a time: what a pass holds in memory is bounded by this and APPLY_CHUNK.
SCAN_FRAMES = 20_000
#: Records one writer may quarantine in a pass before the tailer stops and reports instead: many
#: refusals in a row say the store is broken, not the records.
MAX_QUARANTINE_PER_PASS = 100


@dataclass
class WriterReport:
    run_id: str
    writer: str
    run_number: int | None = None
    records: int = 0
    #: Bytes of a torn tail dropped (the writer died in the middle of a frame).
    dropped_bytes: int = 0
    #: Bytes of corruption skipped between good frames.
    skipped_bytes: int = 0
    #: Records set aside because the store refused them (see ingest/quarantine.py).
    quarantined: int = 0
    alive: bool = False
    completed: bool = False
    marked_lost: bool = False
    #: Why this pass could not deliver the writer's records (they stay in the spool).
    error: str | None = None
    #: Seconds a busy server asked to wait before sending again (its ``Retry-After``), else 0.
    retry_after: float = 0.0


@dataclass
class PollReport:
    writers: list[WriterReport] = field(default_factory=list)
    #: Run directories moved to spool/retired/ in this pass.
    retired: int = 0

    @property
    def records(self) -> int:
        return sum(w.records for w in self.writers)

    @property
    def alive(self) -> int:
        return sum(1 for w in self.writers if w.alive)

    @property
    def errors(self) -> list[WriterReport]:
        return [w for w in self.writers if w.error is not None]

    @property
    def retry_after(self) -> float:
        """The longest wait a busy server asked for in this pass (0: none asked)."""
        return max((w.retry_after for w in self.writers), default=0.0)


class Tailer:
    """Follows the spools of ``spool_dir`` that go to ``target`` (None: all) into ``sink``: a
    ``StoreSink`` locally, a ``shipper.RemoteSink`` with a server."""

    def __init__(self, sink: Sink, spool_dir: Path, target: str | None, retire: bool = True,
                 abandoned: Callable[[str], object] | None = None) -> None:
        self.sink = sink
        #: Called with a run's id when the writer that owns it died without ending it, before the
        #: run is marked lost: locally, kills what is left of the run's processes.
        self.abandoned = abandoned
        self.spool_dir = spool_dir
        self.target = target
        self.retire = retire
        #: The store's cursor per (run, writer), once read: what is applied.
        self._cursors: dict[tuple[str, str], int] = {}
        #: Complete writers whose ack this tailer has checked against the store.
        self._verified: set[tuple[str, str]] = set()

    def poll(self, include_live: bool = True, run_ids: Sequence[str] | None = None) -> PollReport:
        # Decoding makes many small lists and dicts that all live until applied: the cyclic
        # collector would scan them again and again for nothing. None of them form cycles.
        enabled = gc.isenabled()
        gc.disable()
        try:
            return self._poll(include_live, run_ids)
        finally:
            if enabled:
                gc.enable()

    def _poll(self, include_live: bool, run_ids: Sequence[str] | None) -> PollReport:
        report = PollReport()
        for directory in run_dirs(self.spool_dir):
            run_id = directory.name
            if run_ids is not None and run_id not in run_ids:
                continue
            if self.target is not None and target_of(directory) not in (self.target, None):
                continue
            settled = True  # every writer complete and checked: the directory may be retired
            writers = segments_of(directory)
            for writer, files in writers.items():
                ack = read_ack(directory, writer)
                key = (run_id, writer)
                if ack.complete and key in self._verified:
                    continue
                alive = writer_alive(directory, writer)
                if alive and not include_live:
                    settled = False
                    continue
                if not alive:
                    # Listed before the writer was found dead: a segment it made in between would be
                    # missed, and the run taken as complete without it. Dead now: this list is final.
                    files = segments_of(directory).get(writer, files)
                try:
                    found = self._follow(directory, run_id, writer, files, ack, alive)
                except AccessDenied:
                    raise  # the same for every writer: the caller decides (a new token, a new agent)
                except Exception as e:  # noqa: BLE001 - one writer must never stop the others
                    self._cursors.pop(key, None)
                    if not directory.exists() and retired_dir(directory).exists():
                        settled = False
                        break  # another ingester finished and retired this run meanwhile
                    # Reported with its writer and tried again on the next pass, from the store's cursor.
                    what = str(e) if isinstance(e, RunyardError) else f"{type(e).__name__}: {e}"
                    report.writers.append(WriterReport(run_id, writer, ack.run_number, alive=alive, error=what,
                                                       retry_after=getattr(e, "retry_after", 0.0)))
                    settled = False
                    continue
                if found is not None:
                    report.writers.append(found)
                    if not found.completed or found.error is not None:
                        settled = False
            if settled and writers and self.retire and self._retire(directory):
                report.retired += 1
                for writer in writers:
                    self._verified.discard((run_id, writer))
        return report

    def _retire(self, directory: Path) -> bool:
        """Move a finished run's spool out of the way of every later pass, once its commits are on
        disk (after this, the spool is no longer read, so the store must not lose what it holds)."""
        try:
            self.sink.make_durable()
            target = retired_dir(directory)
            target.parent.mkdir(exist_ok=True)
            directory.replace(target)
        except Exception:  # noqa: BLE001 - a locked database, a full disk: tried again next pass
            return False
        return True

    def _follow(self, directory: Path, run_id: str, writer: str, files: list[tuple[int, Path]], ack: Ack,
                alive: bool) -> WriterReport | None:
        # Whether the writer was alive is read before its files: if it was dead, what we read is final.
        key = (run_id, writer)
        report = WriterReport(run_id, writer, ack.run_number, alive=alive)
        cursor = self._cursors.get(key)
        segment, offset = ack.segment, ack.offset
        if cursor is None:
            cursor = self.sink.cursor(run_id, writer)
            if cursor < ack.seq:
                # The ack says more is applied than the store has: the store lost its last commits
                # (a power cut). Read again from where the store's cursor points.
                segment, offset = _rewind(files, cursor)
                ack = replace(ack, complete=False)
            elif ack.complete:
                self._verified.add(key)
                return None
        state = _State(directory, run_id, writer, cursor, ack, report)
        paths = dict(files)
        versions: dict[int, int] = {}
        final = not alive
        last_index = files[-1][0] if files else 0
        while True:
            path = paths.get(segment)
            if path is None:
                break  # a format-2 END pointed here and the next segment is not there yet
            if offset == 0 or segment not in versions:
                head = _pread(path, 0, 1 << 16)
                header = read_header(head)
                if header is None:
                    if final:  # cut inside its header: nothing after it can be read
                        report.dropped_bytes += len(head.rstrip(b"\0"))
                    break
                versions[segment] = header.version
                offset = max(offset, header.size)
            version = versions[segment]
            later = segment < last_index  # format 1: a later segment means this one is final
            settled = final or (version == 1 and later)
            if settled:
                # Read whole: resynchronising past corruption needs to see the rest of it. Decoded
                # a bounded number of frames at a time all the same.
                data = memoryview(_pread(path, offset, -1))
                start = offset
                while True:
                    found = scan(data[offset - start :], offset, version, final=True, eof=True, limit=SCAN_FRAMES,
                                 check_run=columns.good_run)
                    offset = self._took(state, found, segment, version)
                    if not found.short:
                        break
            else:
                # A live segment is preallocated (mostly zeros past its live end): read a little,
                # more while there is more.
                want = FIRST_READ
                while True:
                    data = memoryview(_pread(path, offset, want))
                    found = scan(data, offset, version, final=False, eof=len(data) < want, limit=SCAN_FRAMES,
                                 check_run=columns.good_run)
                    offset = self._took(state, found, segment, version)
                    if not found.short:
                        break
                    want = max(min(READ_CHUNK, want * 4), found.need + FIRST_READ)
            # Closed here, or before this pass began: an ack written by an older runyard after a
            # segment's END (its offset past the END frame, not the next segment) resumes here.
            if version == 2 and (found.closed or (not found.blocks and ends_before(path, offset))):
                segment, offset = segment + 1, 0
                continue
            if version == 1 and later:
                report.dropped_bytes += found.tail
                segment, offset = segment + 1, 0
                continue
            if final:
                report.dropped_bytes += found.tail
            break
        state.apply_all(segment, offset, self)
        cursor = state.cursor
        self._cursors[key] = cursor
        complete = final
        if complete and not state.ended and state.owner and report.run_number is not None:
            if self.abandoned is not None:
                self.abandoned(run_id)
            heartbeat = _iso(self.sink.heartbeat(run_id))
            report.marked_lost = self.sink.mark_lost(
                run_id, f"the process stopped without finishing the run (last heartbeat {heartbeat})")
        report.completed = complete
        new = Ack(cursor, segment, offset, complete,
                  ack.dropped_bytes + report.dropped_bytes + report.skipped_bytes,
                  report.run_number or ack.run_number, state.ended, state.owner)
        if new != ack:
            write_ack(directory, writer, new)
        if complete:
            self._cursors.pop(key, None)
            self._verified.add(key)
        return report

    def _took(self, state: _State, found: Scan, segment: int, version: int) -> int:
        state.take(found, segment, version)
        state.report.skipped_bytes += found.skipped
        # An ack taken after a segment's END points at the next segment: one at the end of this
        # segment would have a later pass, finding nothing more here, take the writer as done.
        if version == 2 and found.closed:
            state.apply_if_full(segment + 1, 0, self)
        else:
            state.apply_if_full(segment, found.end, self)
        return found.end

    def _apply(self, state: _State, parts: list[Any]) -> None:
        """Apply records past the cursor; a record the store refuses for what it is goes to the
        quarantine, found by halving the batch, and the rest is applied."""
        try:
            number, state.cursor = self.sink.apply(state.directory, state.run_id, state.writer, parts, state.cursor)
        except Exception as e:
            if not quarantine.quarantinable(e):
                raise
            total = sum(columns.rows(p) for p in parts)
            if total == 1:
                if state.report.quarantined >= MAX_QUARANTINE_PER_PASS:
                    raise RunyardError(f"the store refused {state.report.quarantined} records of writer "
                                       f"{state.writer} in a row (last: {e}); stopping this writer: is the store "
                                       "broken?") from e
                record = columns.to_records(parts)[0]
                quarantine.put(self.spool_dir, state.run_id, state.writer, seq_of(record),
                               f"{type(e).__name__}: {e}", record)
                state.report.quarantined += 1
                return
            for half in columns.chunks(parts, (total + 1) // 2):
                self._apply(state, half)
            return
        if number is not None:
            state.report.run_number = number
            state.report.records += sum(columns.rows(p) for p in parts)


class _State:
    """One writer's records read in this pass, waiting to be applied, and what they said."""

    def __init__(self, directory: Path, run_id: str, writer: str, cursor: int, ack: Ack,
                 report: WriterReport) -> None:
        self.directory = directory
        self.run_id = run_id
        self.writer = writer
        self.cursor = cursor
        self.ack = ack
        self.report = report
        self.pending: list[Any] = []
        self.ended = ack.ended
        self.owner = ack.owner

    def take(self, found: Scan, index: int, version: int) -> None:
        if not found.blocks:
            return
        recs = _decode(found, index, version, self)
        for rec in recs:
            if type(rec) is not dict and type(rec) is not MetricColumns and rec[1] == "e" \
                    and isinstance(rec[3], dict):
                name = rec[3].get("event")
                self.ended = self.ended or name in ("end", "detach")
                if name == "start":
                    self.owner = not rec[3].get("attach", False)
        self.pending.extend(recs)

    def apply_if_full(self, segment: int, offset: int, tailer: Tailer) -> None:
        if sum(columns.rows(p) for p in self.pending) >= APPLY_CHUNK:
            self.apply_all(segment, offset, tailer)
            write_ack(self.directory, self.writer,
                      Ack(self.cursor, segment, offset, False, self.ack.dropped_bytes,
                          self.report.run_number or self.ack.run_number, self.ended, self.owner))

    def apply_all(self, segment: int, offset: int, tailer: Tailer) -> None:
        pending, self.pending = self.pending, []
        fresh = columns.after(pending, self.cursor)
        if not fresh:
            return
        if any(columns.last_seq(a) > columns.first_seq(b) for a, b in itertools.pairwise(fresh)):
            fresh = sorted(columns.to_records(fresh), key=seq_of)  # format 1 from older writers could interleave
        for chunk in columns.chunks(fresh, APPLY_CHUNK):
            tailer._apply(self, chunk)


#: Equal frames in a row from which the tailer tries to read them as columns (ingest/columns.py).
COLUMNS_MIN = 4


def _decode(found: Scan, index: int, version: int, state: _State) -> list[Any]:
    """Records of the frames found, and runs of same-shape metrics records as columns. Format 2:
    each record gets its address as its sequence number. A payload that does not decode is
    quarantined (its checksum held, so it was written so)."""
    import msgpack

    out: list[Any] = []
    if version == 1:
        for offset, payload in found.frames:
            try:
                out.extend(unflatten(msgpack.unpackb(payload, use_list=True, strict_map_key=False)))
            except Exception as e:  # noqa: BLE001 - a bad frame is set aside, not fatal
                _quarantine_frame(state, (index << OFFSET_BITS) | offset, e, payload)
        return out
    single: list[tuple[int, memoryview]] = []
    for block in found.blocks:
        if block.count >= COLUMNS_MIN:
            decoded = columns.decode(block, OFFSET_BITS, index)
            if decoded is not None:
                _unpack(single, index, state, out)
                part, taken = decoded
                out.append(part)
                if taken == block.count:
                    continue
                block = Block(block.offset + taken * block.size, block.size, block.count - taken,
                              block.data[taken * block.size :], block.header)
        single.extend(block.frames())
    _unpack(single, index, state, out)
    return out


def _unpack(frames: list[tuple[int, memoryview]], index: int, state: _State, out: list[Any]) -> None:
    """Decode frames one record each, in one msgpack stream; empties ``frames``."""
    if not frames:
        return
    import msgpack

    unpacker = msgpack.Unpacker(use_list=True, strict_map_key=False, max_buffer_size=0)
    unpacker.feed(b"".join([payload for _, payload in frames]))
    base = index << OFFSET_BITS
    for n, (offset, payload) in enumerate(frames):
        try:
            rec = unpacker.unpack()
            first = rec[0]
            if type(first) is dict:  # metrics: map, seq, time, step
                first[SEQ], first[TIME], first[STEP] = base | offset, rec[2], rec[3]
                out.append(first)
            else:
                rec[0] = base | offset
                rec[1]
                out.append(rec)
        except Exception as e:  # noqa: BLE001 - a bad frame is set aside, not fatal
            _quarantine_frame(state, base | offset, e, payload)
            unpacker = msgpack.Unpacker(use_list=True, strict_map_key=False, max_buffer_size=0)
            unpacker.feed(b"".join([p for _, p in frames[n + 1 :]]))
    frames.clear()


def _quarantine_frame(state: _State, seq: int, error: BaseException, payload: Any) -> None:
    quarantine.put(state.directory.parent, state.run_id, state.writer, seq, f"undecodable record: {error}",
                   bytes(payload).hex())
    state.report.quarantined += 1


def _rewind(files: list[tuple[int, Path]], cursor: int) -> tuple[int, int]:
    """Where to read again from so that every record after ``cursor`` is seen."""
    if not files:
        return 0, 0
    first = files[0][0]
    if cursor < 0:
        return first, 0
    try:
        header = read_header(_pread(files[0][1], 0, 1 << 16))
    except Exception:  # noqa: BLE001 - unreadable: from the start
        header = None
    if header is None or header.version == 1:
        return first, 0  # format 1 numbers are not positions: read it all, the cursor filters
    index, offset = cursor >> OFFSET_BITS, cursor & ((1 << OFFSET_BITS) - 1)
    return index, offset  # that record is read again, and filtered by the cursor


def _pread(path: Path, offset: int, size: int) -> bytes:
    with path.open("rb") as f:
        f.seek(offset)
        return f.read(size)


def _iso(when: float | None) -> str:
    if when is None:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when))
