"""The tailer hands each writer's records to its sink; one writer that fails holds back no other."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from tests.unit.sdk.test_writer import RUN, CollectingSink, steps

from runyard.errors import AccessDenied, ServerError
from runyard.ingest import columns
from runyard.ingest.tailer import Tailer
from runyard.sdk.writer import Writer
from runyard.spool import records


class RecordingSink(CollectingSink):
    """A sink that keeps the sequence numbers it applied, per run, and refuses the runs named."""

    def __init__(self, refuse: set[str], error: type[Exception] = ServerError) -> None:
        super().__init__()
        self.refuse = refuse
        self.error = error
        self.applied: dict[str, list[int]] = {}

    def cursor(self, run_id: str, writer: str) -> int:
        return max(self.applied.get(run_id, [-1]))

    def apply(self, run_dir: Path, run_id: str, writer: str, recs: list[Any], cursor: int) -> tuple[int | None, int]:
        if run_id in self.refuse:
            raise self.error(f"server says no to {run_id}")
        seqs = [records.seq_of(r) for r in columns.to_records(recs) if records.seq_of(r) > cursor]
        self.applied.setdefault(run_id, []).extend(seqs)
        return 1, max(seqs, default=cursor)


def _spool(spool: Path, run_id: str, points: int) -> None:
    writer = Writer(spool / run_id, run_id, "w1")
    writer.start()
    for step in range(points):
        writer.queue.extend(({"x": float(step)}, records.UNNUMBERED, time.time(), step))
    writer.queue.append((records.UNNUMBERED, records.EVENT, time.time(), {"event": "end", "status": "finished"}))
    assert writer.close(10)


def test_a_refused_writer_is_reported_and_the_others_are_delivered(tmp_path: Path) -> None:
    for run_id in ("01AAAAAAAAAAAAAAAAAAAAAAAA", "01BBBBBBBBBBBBBBBBBBBBBBBB", "01CCCCCCCCCCCCCCCCCCCCCCCC"):
        _spool(tmp_path, run_id, 100)
    sink = RecordingSink(refuse={"01AAAAAAAAAAAAAAAAAAAAAAAA"})
    report = Tailer(sink, tmp_path, None).poll()
    assert [w.run_id for w in report.errors] == ["01AAAAAAAAAAAAAAAAAAAAAAAA"]
    assert "server says no" in (report.errors[0].error or "")
    assert sorted(sink.applied) == ["01BBBBBBBBBBBBBBBBBBBBBBBB", "01CCCCCCCCCCCCCCCCCCCCCCCC"]
    assert all(len(seqs) == 101 and seqs == sorted(seqs) for seqs in sink.applied.values())
    sink.refuse.clear()  # the server relents: the refused run is delivered on the next pass, whole
    Tailer(sink, tmp_path, None).poll()
    assert sink.applied["01AAAAAAAAAAAAAAAAAAAAAAAA"] == sink.applied["01BBBBBBBBBBBBBBBBBBBBBBBB"]


def test_a_refused_token_stops_the_pass_for_the_caller_to_decide(tmp_path: Path) -> None:
    _spool(tmp_path, "01AAAAAAAAAAAAAAAAAAAAAAAA", 10)
    sink = RecordingSink(refuse={"01AAAAAAAAAAAAAAAAAAAAAAAA"}, error=AccessDenied)
    with pytest.raises(AccessDenied):
        Tailer(sink, tmp_path, None).poll()


def test_an_unexpected_error_of_one_writer_is_reported_with_it_and_stops_nothing(tmp_path: Path) -> None:
    for run_id in ("01AAAAAAAAAAAAAAAAAAAAAAAA", "01BBBBBBBBBBBBBBBBBBBBBBBB"):
        _spool(tmp_path, run_id, 10)
    sink = RecordingSink(refuse={"01AAAAAAAAAAAAAAAAAAAAAAAA"}, error=ZeroDivisionError)
    report = Tailer(sink, tmp_path, None).poll()  # no exception escapes the pass
    assert [(w.run_id, w.writer) for w in report.errors] == [("01AAAAAAAAAAAAAAAAAAAAAAAA", "w1")]
    assert (report.errors[0].error or "").startswith("ZeroDivisionError")
    assert list(sink.applied) == ["01BBBBBBBBBBBBBBBBBBBBBBBB"]


def _spool_in_small_segments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """2,000 steps of a writer that has closed, over many small segments (4 KiB, growing to 16 KiB)."""
    from runyard.spool import segment

    monkeypatch.setattr(segment, "FIRST_SEGMENT_BYTES", 4096)
    monkeypatch.setattr(segment, "SEGMENT_BYTES", 16384)
    writer = Writer(tmp_path / RUN, RUN, "w1")
    writer.start()
    for step in range(2000):
        writer.queue.extend(({"x": float(step)}, records.UNNUMBERED, time.time(), step))
    assert writer.close(10)


def test_a_writer_that_made_a_segment_and_died_during_a_pass_is_read_to_its_end(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The pass lists the segments, then finds the writer dead: a segment it made in between (and
    # its records) must still be read, not the run taken as complete and retired without them.

    from runyard.ingest import tailer as tailer_module
    from runyard.spool import segment

    _spool_in_small_segments(tmp_path, monkeypatch)  # the writer is gone: its flock released
    last = max(segment.segments_of(tmp_path / RUN)["w1"])[1]
    aside = tmp_path / "aside"
    last.rename(aside)  # not there yet when the pass lists the segments ...

    def made_then_died(directory: Path, writer_id: str) -> bool:
        aside.rename(last)  # ... made by the writer, which then died, before the pass asks
        return False

    monkeypatch.setattr(tailer_module, "writer_alive", made_then_died)
    sink = CollectingSink()
    Tailer(sink, tmp_path, None, retire=True).poll()
    assert steps(sink.records) == list(range(2000))
    assert (tmp_path / RUN).exists() or (tmp_path / "retired" / RUN / last.name).exists()


def test_a_pass_resuming_just_after_a_segments_end_goes_on_in_the_next_segment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A pass that applied a chunk ending with a segment's END acked "this segment, past its END".
    # The writer died; the next pass resumed there, found nothing more in that segment, and took
    # the writer as complete: every later segment was lost (a SIGKILL test read back 541,729 of
    # more than 1,034,941 steps, exactly the first four segments).
    from runyard.spool import segment
    from runyard.spool.acks import Ack, write_ack

    _spool_in_small_segments(tmp_path, monkeypatch)
    import shutil

    shutil.copytree(tmp_path / RUN, tmp_path / "copy" / RUN)
    everything = CollectingSink()
    Tailer(everything, tmp_path / "copy", None, retire=False).poll()  # the whole spool, read afresh
    files = segment.segments_of(tmp_path / RUN)["w1"]
    index, path = files[1]  # a closed segment in the middle
    past_end = path.stat().st_size  # the segment ends with its END frame
    applied = (index << segment.OFFSET_BITS) | past_end  # every record of segments 0 and 1
    write_ack(tmp_path / RUN, "w1", Ack(applied, index, past_end, False, 0, 1, False, True))
    sink = RecordingSink(refuse=set())
    sink.applied[RUN] = [applied]
    Tailer(sink, tmp_path, None, retire=False).poll()
    later = [s for s in (records.seq_of(r) for r in columns.to_records(everything.records)) if s > applied]
    assert len(files) > 2 and later and sink.applied[RUN][1:] == later
