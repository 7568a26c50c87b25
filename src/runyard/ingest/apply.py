"""Turning spool records into one ``IngestBatch`` and applying it: idempotent by (run, writer, seq).

Used by the local agent, ``runyard sync`` and (later) the server's ingest route alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from runyard.errors import Conflict, InvalidArgument
from runyard.ingest import columns, fields
from runyard.ingest.columns import MetricColumns
from runyard.names import (
    validate_end_status,
    validate_label,
    validate_metric_key,
    validate_project_name,
    validate_run_name,
)
from runyard.spool import records
from runyard.store.api import IngestBatch, IngestResult, LogLine, RunInput, Store
from runyard.store.artifacts import ArtifactStore
from runyard.store.series import Points

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from runyard.ingest.alerting import Watcher

#: Metric keys that are hardware samples: not part of the run's default summary.
SYSTEM_PREFIX = "system/"
_STREAMS = {"stdout", "stderr", "system"}


def build_batch(run_id: str, writer: str, recs: Sequence[Any]) -> IngestBatch:
    """Group records (in sequence order, none applied yet) into a batch. Runs of metrics records
    may come as ``MetricColumns`` (ingest/columns.py) among them."""
    batch = IngestBatch(run_id, writer, columns.first_seq(recs[0]), columns.last_seq(recs[-1]))
    explicit_summary: dict[str, tuple[int, Any]] = {}
    blocks = [r for r in recs if type(r) is MetricColumns]
    if blocks:
        recs = [r for r in recs if type(r) is not MetricColumns]
    metric_recs: list[dict[str, Any]] = [r for r in recs if type(r) is dict]
    for rec in recs:
        if type(rec) is dict:
            continue
        kind = rec[1]
        # Each field checked as the SDK and the supervisor write it (ingest/fields.py): a 400 naming
        # it from the server, a quarantined record locally, never a crash in the store.
        where = f"record {rec[0]!r:.30} ({_KIND_NAMES.get(kind, kind)})"
        fields.integer(rec[0], f"{where} sequence number")
        if len(rec) < _SIZES.get(kind, 3):
            raise InvalidArgument(f"{where} has {len(rec)} items; it needs {_SIZES[kind]}")
        time = fields.moment(rec[2], f"{where} time")
        if kind == records.LOG:
            stream = rec[3] if rec[3] in _STREAMS else "stdout"
            line = _text(fields.text(rec[4], f"{where} text"))
            batch.logs.append(LogLine(time, line, stream))  # type: ignore[arg-type]
        elif kind == records.EVENT:
            named = rec[3].get("event") if type(rec[3]) is dict else None
            _event(batch, fields.mapping(rec[3], named if named in _EVENT_NAMES else "event"), time)
        elif kind == records.CONFIG:
            batch.config.update(fields.mapping(rec[3], "config", keys=True))
        elif kind == records.SUMMARY:
            for key, value in fields.mapping(rec[3], "summary", keys=True).items():
                explicit_summary[key] = (rec[0], value)
        elif kind == records.NOTE:
            batch.notes.append(_text(fields.text(rec[3], "note")))
        elif kind == records.LABELS:
            _labels(batch, fields.text_list(rec[3], "labels added", 100),
                    fields.text_list(rec[4], "labels removed", 100))
        elif kind == records.ARTIFACT:
            mode = rec[7] if len(rec) > 7 else None  # the supervisor says a file's mode; the SDK does not
            batch.artifacts.append((fields.text(rec[3], "artifact path", 4096),
                                    fields.integer(rec[4], "artifact size"), fields.text(rec[5], "artifact sha256", 64),
                                    fields.text(rec[6], "artifact ref", 4096),
                                    mode & 0o777 if type(mode) is int else None))
        elif kind == records.INPUT:
            source_run = rec[5] if rec[5] is None else fields.integer(rec[5], "input source_run")
            batch.inputs.append(RunInput(_input_kind(rec[3]), fields.text(rec[4], "input sha256", 64), source_run,
                                         fields.optional_text(rec[6], "input source_path", 4096),
                                         fields.optional_text(rec[7], "input mount", 4096)))
        # Heartbeats, and kinds from newer writers, only say the writer was alive at ``time``.
    last: dict[str, tuple[int, float]] = {}
    if metric_recs or blocks:
        batch.points, last = _series(metric_recs, blocks)
    for key, (_, value) in last.items():
        if not key.startswith(SYSTEM_PREFIX):
            batch.summary[key] = value
    last_seq = {key: seq for key, (seq, _) in last.items()}
    for key, (seq, value) in explicit_summary.items():
        if seq > last_seq.get(key, -1):
            batch.summary[key] = value
    times = [records.time_of(r) for r in recs] + [float(b.times.max()) for b in blocks]
    batch.heartbeat = max(times)
    return batch


def _series(metric_recs: list[dict[str, Any]],
            blocks: Sequence[MetricColumns] = ()) -> tuple[dict[str, Points], dict[str, tuple[int, float]]]:
    """Columns per metric key, and each key's last logged (sequence number, value).

    Records usually share their keys: grouping them by key set makes each group one 2-D array
    built in one call (sequence number, time and step included, as reserved keys), instead of a
    Python loop per value."""
    groups: dict[tuple[str, ...], list[int]] = {}
    for i, rec in enumerate(metric_recs):
        groups.setdefault(tuple(rec), []).append(i)
    parts: dict[str, list[tuple[NDArray[Any], ...]]] = {}
    for keys, members in groups.items():
        for key in keys:  # checked again here: a spool may come from another version, or a bug
            if key not in records.RESERVED:
                if not isinstance(key, str):
                    raise InvalidArgument(f"metric name {key!r} is not a string")
                validate_metric_key(key)
        try:
            table = np.array([tuple(metric_recs[i].values()) for i in members], dtype=np.float64).reshape(
                len(members), len(keys))
        except (TypeError, ValueError) as e:
            raise InvalidArgument(f"a value of metrics {[k for k in keys if k not in records.RESERVED]} is not a "
                                  f"number ({e})") from None
        column = {key: j for j, key in enumerate(keys)}
        if records.TIME not in column or records.STEP not in column:
            raise InvalidArgument(f"a metrics record of {[k for k in keys if k not in records.RESERVED]} has no "
                                  f"{'time' if records.TIME not in column else 'step'}")
        seqs = table[:, column[records.SEQ]].astype(np.int64)
        times = table[:, column[records.TIME]]
        if not bool(np.all(np.abs(times) <= fields.MAX_TIME)):  # NaN too: the store keeps times as integers
            raise InvalidArgument(f"a time of metrics {[k for k in keys if k not in records.RESERVED]} is not "
                                  "seconds since 1970")
        steps = table[:, column[records.STEP]]
        for key, j in column.items():
            if key not in records.RESERVED:
                parts.setdefault(key, []).append((seqs, steps, times, table[:, j]))
    for block in blocks:
        for j, key in enumerate(block.keys):
            validate_metric_key(key)
            parts.setdefault(key, []).append((block.seqs, block.steps, block.times, block.values[:, j]))
    out: dict[str, Points] = {}
    last: dict[str, tuple[int, float]] = {}
    for key, pieces in parts.items():
        seqs, steps, times, values = (np.concatenate([p[i] for p in pieces]) if len(pieces) > 1 else pieces[0][i]
                                      for i in range(4))  # (sequence numbers, steps, times, values)
        if len(pieces) > 1 and bool(np.any(seqs[1:] < seqs[:-1])):  # back to arrival (sequence) order,
            order = np.argsort(seqs, kind="stable")  # which orders equal steps
            seqs, steps, times, values = seqs[order], steps[order], times[order], values[order]
        last[key] = (int(seqs[-1]), float(values[-1]))
        if steps.dtype != np.int64:  # from the records' floats: a step beyond int64 cannot be kept
            if not bool(np.all(np.abs(steps) < 2.0**63)):
                raise InvalidArgument(f"metric {key!r}: a step is beyond what a 64-bit integer holds")
            steps = steps.astype(np.int64)
        out[key] = Points.of(steps, times, values)
    return out, last


def _text(value: Any) -> str:
    """Text as every database keeps it: PostgreSQL's text cannot hold NUL, so no engine gets one
    (a program printing binary to stdout, say); U+FFFD shows where it was."""
    text = str(value)
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


def _labels(batch: IngestBatch, added: Sequence[str], removed: Sequence[str]) -> None:
    for label in added:
        batch.labels_added.append(label)
        if label in batch.labels_removed:
            batch.labels_removed.remove(label)
    for label in removed:
        batch.labels_removed.append(label)
        if label in batch.labels_added:
            batch.labels_added.remove(label)


_KIND_NAMES = {records.LOG: "log", records.EVENT: "event", records.CONFIG: "config", records.SUMMARY: "summary",
               records.NOTE: "note", records.LABELS: "labels", records.ARTIFACT: "artifact",
               records.INPUT: "input", records.HEARTBEAT: "heartbeat"}
#: Items in each kind of record (spool/records.py); an artifact's mode may follow.
_SIZES = {records.LOG: 5, records.EVENT: 4, records.CONFIG: 4, records.SUMMARY: 4, records.NOTE: 4,
          records.LABELS: 5, records.ARTIFACT: 7, records.HEARTBEAT: 3, records.INPUT: 8}
_INPUT_KINDS = ("artifact", "dataset", "path")
_EVENT_NAMES = ("start", "end", "environment", "alert")


def _input_kind(value: Any) -> Any:
    if value not in _INPUT_KINDS:
        raise InvalidArgument(f"input kind must be one of {', '.join(_INPUT_KINDS)}, not {value!r:.60}")
    return value


def _start(event: dict[str, Any]) -> dict[str, Any]:
    """The start event's fields, each as the SDK's init() and the supervisor write it."""
    f = fields
    if "project" in event and event["project"] is not None:
        validate_project_name(f.text(event["project"], "start.project", 100))
    if event.get("name") is not None:
        validate_run_name(f.text(event["name"], "start.name", 200))
    if event.get("config") is not None:
        f.mapping(event["config"], "start.config", keys=True)
    if event.get("labels") is not None:
        for label in f.text_list(event["labels"], "start.labels", 100):
            validate_label(label)
    f.optional_text(event.get("notes"), "start.notes")
    if event.get("command") is not None:
        f.text_list(event["command"], "start.command")
    f.optional_text(event.get("host"), "start.host", f.MAX_SHORT)
    if event.get("environment") is not None:
        f.environment(event["environment"], "start.environment")
    return event


def _end(event: dict[str, Any]) -> dict[str, Any]:
    # A run's own process says only how it ended; `queued` here would re-queue it (see store/transitions.py).
    validate_end_status(event.get("status"), "end.status")
    if event.get("exit_code") is not None:
        fields.integer(event["exit_code"], "end.exit_code", fields.INT32)
    fields.optional_text(event.get("message"), "end.message")
    return event


def _event(batch: IngestBatch, event: dict[str, Any], time: float) -> None:
    name = event.pop("event", None)
    if name == "start":
        batch.start = {**_start(event), "time": time}
    elif name == "end":
        batch.end = {**_end(event), "time": time}
    elif name == "environment":
        batch.environment.update(fields.environment(event, "environment"))
    elif name == "alert":
        _alert_rule(batch, event.get("rule"), time)


def _alert_rule(batch: IngestBatch, data: Any, time: float) -> None:
    """A rule from ``run.alert``. The SDK checked it; one that fails here (a spool written by
    another version, say) is reported in the run's log rather than dropped unseen."""
    from runyard.alerts.rules import check
    from runyard.errors import ConfigError

    try:
        if not isinstance(data, dict):
            raise ConfigError("run.alert: the rule is not a table")
        batch.alert_rules.append(check(data, "run.alert"))
    except ConfigError as e:
        batch.logs.append(LogLine(time, f"alert rule refused: {e}", "system"))


def stage_artifacts(batch: IngestBatch, run_dir: Path, artifacts: ArtifactStore) -> None:
    """Move files the SDK staged into the artifact store; drop records whose content is gone."""
    kept = []
    for path, size, sha256, ref, mode in batch.artifacts:
        staged = run_dir / "files" / sha256
        if staged.is_file():
            blob = artifacts.put_file(staged)
            if blob.sha256 != sha256:
                continue  # the staged copy was damaged: its record would lie
            staged.unlink(missing_ok=True)  # another ingester (a CLI catching up) may have moved it too
        elif not artifacts.exists(ref):
            continue
        kept.append((path, size, sha256, ref, mode))
    batch.artifacts = kept


def apply_records(store: Store, artifacts: ArtifactStore, run_dir: Path, run_id: str, writer: str,
                  recs: list[Any], cursor: int, watcher: Watcher | None = None) -> tuple[IngestResult | None, int]:
    """Apply the records after ``cursor``; returns the result and the new cursor. ``watcher``
    evaluates alert rules on what was applied.

    If another ingester moved the cursor meanwhile, re-reads it and applies only what is left.
    """
    for _attempt in range(3):
        fresh = columns.after(recs, cursor)
        if not fresh:
            return None, cursor
        batch = build_batch(run_id, writer, fresh)
        stage_artifacts(batch, run_dir, artifacts)
        try:
            result = store.ingest(batch)
        except Conflict:
            cursor = store.ingest_cursor(run_id, writer)
            continue
        if watcher is not None and result.applied:
            watcher.after_ingest(result.run_number, batch)
        return result, batch.last_seq
    raise Conflict(f"could not apply records of writer {writer} of run {run_id}: the cursor keeps moving")
