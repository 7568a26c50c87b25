"""The tailer hands each writer's records to its sink; one writer that fails holds back no other."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from runyard.errors import AccessDenied, ServerError
from runyard.ingest import columns
from runyard.ingest.tailer import Tailer
from runyard.sdk.writer import Writer
from runyard.spool import records


class RecordingSink:
    def __init__(self, refuse: set[str], error: type[Exception] = ServerError) -> None:
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

    def mark_lost(self, run_id: str, message: str) -> bool:
        return False

    def heartbeat(self, run_id: str) -> float | None:
        return None

    def make_durable(self) -> None:
        pass


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
