"""The ingest endpoint's work: spool records sent by a shipper, applied like the local agent does.

The body is a msgpack map of ``run_id``, ``writer`` and ``items``: the writer's records in the
form readers see them (see spool/records.py: metrics as one map with reserved keys, every other
record as an array), compressed with zlib. It is decoded with size limits and never into
anything but plain values; records are applied only past the store's cursor for (run, writer), so
a batch sent twice changes nothing. Artifact records must name content already uploaded to
``/blobs`` (the shipper uploads it first; a record whose content never arrived is dropped, as in
local mode): the server keeps its own content reference, whatever the client wrote.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from typing import Any

import msgpack

from runyard.errors import Ambiguous, Conflict, InvalidArgument, NotFound
from runyard.ingest.apply import build_batch
from runyard.names import validate_project_name, validate_relpath
from runyard.spool import records
from runyard.store.artifacts import Blob, DiskArtifacts
from runyard.store.sql import SqlStore

#: Largest request body accepted, compressed and decompressed.
MAX_BODY = 64 << 20
MAX_INFLATED = 512 << 20
_RUN_ID = re.compile(r"^[0-9A-Za-z]{10,64}$")
_WRITER = re.compile(r"^[0-9A-Za-z_-]{1,64}$")


@dataclass(frozen=True)
class Applied:
    run_number: int | None
    project: str | None
    #: Highest sequence number of this writer the server holds.
    cursor: int


def decode(body: bytes, deflated: bool) -> tuple[str, str, list[Any]]:
    if deflated:
        inflater = zlib.decompressobj()
        try:
            body = inflater.decompress(body, MAX_INFLATED)
        except zlib.error as e:
            raise InvalidArgument(f"the body is not valid deflate data: {e}") from None
        if inflater.unconsumed_tail:
            raise InvalidArgument(f"the body inflates beyond {MAX_INFLATED >> 20} MiB; send smaller batches")
    try:
        payload = msgpack.unpackb(body, raw=False, strict_map_key=True, use_list=True)
    except Exception as e:  # noqa: BLE001 - msgpack raises several types for malformed input
        raise InvalidArgument(f"the body is not valid msgpack: {type(e).__name__}") from None
    if not isinstance(payload, dict):
        raise InvalidArgument("the body must be a map with run_id, writer and items")
    run_id, writer, items = payload.get("run_id"), payload.get("writer"), payload.get("items")
    if not isinstance(run_id, str) or not _RUN_ID.match(run_id):
        raise InvalidArgument("run_id must be a run's unique id (10-64 letters and digits)")
    if not isinstance(writer, str) or not _WRITER.match(writer):
        raise InvalidArgument("writer must be 1-64 letters, digits, - or _")
    if not isinstance(items, list):
        raise InvalidArgument("items must be a list of spool records")
    return run_id, writer, items


def _records(items: list[Any]) -> list[Any]:
    try:
        recs = [r if type(r) is dict else tuple(r) for r in items]
        recs.sort(key=records.seq_of)
        for rec in recs:
            if type(rec) is not dict and (len(rec) < 3 or rec[1] not in records.KINDS):
                raise InvalidArgument("a record must be a metrics map or an array [seq, kind, time, ...]")
            seq = records.seq_of(rec)
            if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
                raise InvalidArgument("a record's sequence number must be a non-negative integer")
    except (TypeError, ValueError, IndexError, KeyError, AttributeError) as e:
        raise InvalidArgument(f"malformed spool records: {e}") from None
    return recs


def apply(store: SqlStore, artifacts: DiskArtifacts, run_id: str, writer: str, items: list[Any],
          project_scope: str | None) -> Applied:
    recs = _records(items)
    cursor = store.ingest_cursor(run_id, writer)
    fresh = [r for r in recs if records.seq_of(r) > cursor]
    existing = _existing(store, run_id)
    if existing is not None and project_scope is not None and existing.project != project_scope:
        raise NotFound(f"no run {run_id} in project {project_scope}")
    if not fresh:
        return Applied(existing.number if existing else None, existing.project if existing else None, cursor)
    try:
        batch = build_batch(run_id, writer, fresh)
    except (TypeError, ValueError, IndexError, KeyError, AttributeError) as e:
        raise InvalidArgument(f"malformed spool records: {e}") from None
    if batch.start is not None:
        project = batch.start.get("project")
        if project is not None:
            validate_project_name(project)
        if project_scope is not None and existing is None and project != project_scope:
            raise NotFound(f"this token may only log to project {project_scope}")
    elif existing is None:
        raise Conflict(f"run {run_id} is unknown here and this batch does not start it: send its records from "
                       "the first one")
    kept = []
    for path, size, sha256, _client_ref in batch.artifacts:
        validate_relpath(path)
        if artifacts.has(sha256):  # as in local mode, a record whose content never arrived is dropped
            kept.append((path, int(size), sha256, Blob(sha256, int(size)).content_ref))
    batch.artifacts = kept
    result = store.ingest(batch)
    run = store.get_run(result.run_number)
    return Applied(result.run_number, run.project, max(cursor, batch.last_seq))


def _existing(store: SqlStore, run_id: str) -> Any:
    try:
        run = store.get_run(run_id)
    except (NotFound, Ambiguous):
        return None
    return run if run.id == run_id else None
