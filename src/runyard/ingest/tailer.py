"""Local ingest: follow run spools from their acknowledged offsets into the store.

One pass (``Tailer.poll``) visits every run directory that targets this database, reads what each
writer appended since the last pass, applies it, and acknowledges it. When a writer's lock is free
(it finished, or died) and everything readable is applied, the writer is complete: a torn tail is
dropped and counted, spilled batches it never copied are applied, and a run whose writer died
without saying how it ended is marked lost, with its last heartbeat.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from runyard.errors import AccessDenied, RunyardError
from runyard.ingest.sink import Sink
from runyard.spool.acks import Ack, read_ack, write_ack
from runyard.spool.records import seq_of, unflatten
from runyard.spool.rundir import run_dirs, target_of, writer_alive
from runyard.spool.segment import read_frames, read_header, segments_of

#: Records applied per transaction: bounds memory and keeps transactions short.
APPLY_CHUNK = 50_000
#: Bytes read from a segment per pass.
READ_LIMIT = 64 << 20


@dataclass
class WriterReport:
    run_id: str
    writer: str
    run_number: int | None = None
    records: int = 0
    dropped_bytes: int = 0
    alive: bool = False
    completed: bool = False
    marked_lost: bool = False
    #: Why this pass could not deliver the writer's records (they stay in the spool).
    error: str | None = None


@dataclass
class PollReport:
    writers: list[WriterReport] = field(default_factory=list)

    @property
    def records(self) -> int:
        return sum(w.records for w in self.writers)

    @property
    def alive(self) -> int:
        return sum(1 for w in self.writers if w.alive)

    @property
    def errors(self) -> list[WriterReport]:
        return [w for w in self.writers if w.error is not None]


class Tailer:
    """Follows the spools of ``spool_dir`` that go to ``target`` (None: all) into ``sink``: a
    ``StoreSink`` locally, a ``shipper.RemoteSink`` with a server."""

    def __init__(self, sink: Sink, spool_dir: Path, target: str | None) -> None:
        self.sink = sink
        self.spool_dir = spool_dir
        self.target = target
        self._cursors: dict[tuple[str, str], int] = {}

    def poll(self, include_live: bool = True, run_ids: Sequence[str] | None = None) -> PollReport:
        # Decoding makes hundreds of thousands of small lists and dicts that all live until applied:
        # the cyclic collector would scan them again and again for nothing. None of them form cycles.
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
            for writer, files in segments_of(directory).items():
                ack = read_ack(directory, writer)
                if ack.complete:
                    continue
                alive = writer_alive(directory, writer)
                if alive and not include_live:
                    continue
                try:
                    report.writers.append(self._follow(directory, run_id, writer, files, ack, alive))
                except AccessDenied:
                    raise  # the same for every writer: the caller decides (a new token, a new agent)
                except RunyardError as e:
                    # One writer the store or server refuses must not hold back every other run: it is
                    # reported and tried again on the next pass, from its acknowledged offset.
                    self._cursors.pop((run_id, writer), None)
                    report.writers.append(WriterReport(run_id, writer, ack.run_number, alive=alive, error=str(e)))
        return report

    def _follow(self, directory: Path, run_id: str, writer: str, files: list[tuple[int, Path]], ack: Ack,
                alive: bool) -> WriterReport:
        # Whether the writer was alive is read before its files: if it was dead, what we read is final.
        report = WriterReport(run_id, writer, ack.run_number, alive=alive)
        key = (run_id, writer)
        cursor = self._cursors.get(key)
        if cursor is None:
            cursor = self.sink.cursor(run_id, writer)
        pending: list[Sequence[Any]] = []
        segment, offset = ack.segment, ack.offset
        dropped = 0
        ended, owner = ack.ended, ack.owner
        indexes = [i for i, _ in files]
        for index, path in files:
            if index < segment:
                continue
            if index > segment:
                segment, offset = index, 0
            data = _read_from(path, offset)
            truncated = len(data) >= READ_LIMIT
            if offset == 0:
                header = read_header(data)
                if header is None:
                    break  # being created
                data, offset = data[header.size :], header.size
            frames = read_frames(data, 0)
            for batch in frames.batches:
                records = unflatten(batch)
                for rec in records:
                    if type(rec) is not dict and rec[1] == "e":
                        name = rec[3].get("event")
                        ended = ended or name in ("end", "detach")
                        if name == "start":
                            owner = not rec[3].get("attach", False)
                pending.extend(records)
            offset += frames.end
            later = index < indexes[-1] and not truncated
            if truncated:
                alive = True  # more to read next pass: not complete yet
            if frames.tail and not truncated and (later or not alive):
                dropped += frames.tail  # a cut frame no writer will finish
            if len(pending) >= APPLY_CHUNK:
                cursor = self._apply(directory, run_id, writer, pending, cursor, report)
                pending = []
                self._ack(directory, writer, report, Ack(cursor, segment, offset, False, ack.dropped_bytes,
                                                         report.run_number, ended, owner))
            if not later:
                break
        if not alive:
            pending.extend(_spilled(directory, writer))
        if pending:
            cursor = self._apply(directory, run_id, writer, pending, cursor, report)
        self._cursors[key] = cursor
        complete = not alive
        if complete and not ended and owner and report.run_number is not None:
            heartbeat = _iso(self.sink.heartbeat(run_id))
            report.marked_lost = self.sink.mark_lost(
                run_id, f"the process stopped without finishing the run (last heartbeat {heartbeat})")
        report.dropped_bytes = dropped
        report.completed = complete
        new = Ack(cursor, segment, offset, complete, ack.dropped_bytes + dropped, report.run_number, ended, owner)
        if new != ack:
            self._ack(directory, writer, report, new)
        if complete:
            self._cursors.pop(key, None)
        return report

    def _apply(self, directory: Path, run_id: str, writer: str, pending: list[Sequence[Any]], cursor: int,
               report: WriterReport) -> int:
        pending.sort(key=seq_of)
        for start in range(0, len(pending), APPLY_CHUNK):
            chunk = pending[start : start + APPLY_CHUNK]
            number, cursor = self.sink.apply(directory, run_id, writer, list(chunk), cursor)
            if number is not None:
                report.run_number = number
                report.records += len(chunk)
        return cursor

    def _ack(self, directory: Path, writer: str, report: WriterReport, ack: Ack) -> None:
        write_ack(directory, writer, replace(ack, run_number=report.run_number or ack.run_number))


def _read_from(path: Path, offset: int) -> bytes:
    with path.open("rb") as f:
        f.seek(offset)
        return f.read(READ_LIMIT)


def _spilled(directory: Path, writer: str) -> list[Sequence[Any]]:
    """Batches a dead writer had spilled to disk but not yet copied into its segments."""
    out: list[Sequence[Any]] = []
    spill = directory / "spill"
    for path in sorted(spill.glob(f"{writer}-*.frame")) if spill.is_dir() else []:
        for batch in read_frames(path.read_bytes(), 0).batches:
            out.extend(unflatten(batch))
    return out


def _iso(when: float | None) -> str:
    if when is None:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when))
