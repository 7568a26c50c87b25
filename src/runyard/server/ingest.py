"""The ingest endpoint's work: spool records sent by a shipper, applied like the local agent does.

The body is a msgpack map of ``run_id``, ``writer`` and ``items``: the writer's records in the
form readers see them (see spool/records.py: metrics as one map with reserved keys, every other
record as an array), compressed with zlib. It is decoded with size limits and never into
anything but plain values; records are applied only past the store's cursor for (run, writer), so
a batch sent twice changes nothing. Artifact records must name content already uploaded to
``/blobs`` (the shipper uploads it first; a record whose content never arrived is dropped, as in
local mode): the server keeps its own content reference, whatever the client wrote.

A batch the server can never apply is refused with a 4xx naming the reason, so a shipper stops
sending it rather than retrying forever: 400 when the records are malformed (or too many for one
request), 422 when they are well formed but the database refuses to store them (a NUL character in
PostgreSQL text, a number beyond its column's range), 404 or 409 when they name a run this token
may not log to, or that does not exist here. 503 means only that the database is busy or
unreachable: the same batch may succeed later.
"""

from __future__ import annotations

import bisect
import itertools
import re
import zlib
from dataclasses import dataclass
from typing import Any

import msgpack

from runyard.errors import Conflict, InvalidArgument, NotFound, RunyardError
from runyard.ingest.alerting import Watcher
from runyard.ingest.apply import build_batch
from runyard.names import validate_project_name, validate_relpath
from runyard.spool import records
from runyard.store.artifacts import Blob, DiskArtifacts
from runyard.store.sql import SqlStore

#: Largest request body accepted, compressed and decompressed.
MAX_BODY = 64 << 20
MAX_INFLATED = 64 << 20
#: Bounds on what one request may declare, so a small body cannot make the server allocate much.
MAX_RECORDS = 1_000_000
MAX_KEYS = 100_000
#: Sequence numbers are kept in 64-bit signed columns.
SEQ_LIMIT = 1 << 63
_RUN_ID = re.compile(r"^[0-9A-Za-z]{10,64}$")
_WRITER = re.compile(r"^[0-9A-Za-z_-]{1,64}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Applied:
    run_number: int | None
    project: str | None
    #: Highest sequence number of this writer the server holds.
    cursor: int


def _no_extension(code: int, data: bytes) -> Any:
    # No writer sends msgpack extension types: they would reach the store as objects it cannot keep.
    raise InvalidArgument(f"the body holds a msgpack extension type ({code}); records hold plain values only")


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
        payload = msgpack.unpackb(body, raw=False, strict_map_key=True, use_list=True, max_array_len=MAX_RECORDS,
                                  max_map_len=MAX_KEYS, max_str_len=MAX_INFLATED, max_bin_len=MAX_INFLATED,
                                  ext_hook=_no_extension)
    except InvalidArgument:
        raise
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


def _records(items: list[Any]) -> tuple[list[Any], list[int]]:
    """Records in sequence order (duplicates dropped), and their sequence numbers."""
    recs: list[Any] = []
    seqs: list[Any] = []
    seq_key, kinds = records.SEQ, records.KINDS
    for item in items:  # one pass: this runs for every record a server receives
        if type(item) is dict:
            seqs.append(item.get(seq_key))
            recs.append(item)
        elif type(item) is list and len(item) >= 3 and type(item[1]) is str and item[1] in kinds:
            seqs.append(item[0])
            recs.append(tuple(item))
        else:
            raise InvalidArgument("a record must be a metrics map or an array [seq, kind, time, ...]")
    if not all(type(seq) is int and 0 <= seq < SEQ_LIMIT for seq in seqs):
        raise InvalidArgument("seq: every record needs a sequence number, an integer from 0 to 2**63 - 1")
    if any(a >= b for a, b in itertools.pairwise(seqs)):  # shippers send them in order, once each
        order = sorted(range(len(recs)), key=seqs.__getitem__)
        kept = [i for n, i in enumerate(order) if n == 0 or seqs[i] != seqs[order[n - 1]]]
        recs, seqs = [recs[i] for i in kept], [seqs[i] for i in kept]
    return recs, seqs


def _readable(store: SqlStore, number: int, project_scope: str | None) -> bool:
    try:
        run = store.get_run(number)
    except NotFound:
        return False
    return project_scope is None or run.project == project_scope


def apply(store: SqlStore, artifacts: DiskArtifacts, run_id: str, writer: str, items: list[Any],
          project_scope: str | None, watcher: Watcher | None = None) -> Applied:
    recs, seqs = _records(items)
    cursor, number, project = store.ingest_state(run_id, writer)
    if number is not None and project_scope is not None and project != project_scope:
        raise NotFound(f"no run {run_id} in project {project_scope}")
    fresh = recs[bisect.bisect_right(seqs, cursor):]
    if not fresh:
        return Applied(number, project, cursor)
    try:
        batch = build_batch(run_id, writer, fresh)
    except (TypeError, ValueError, IndexError, KeyError, AttributeError) as e:
        raise InvalidArgument(f"malformed spool records: {e}") from None
    if batch.start is not None and number is None:
        project = batch.start.get("project")
        if project is not None:
            validate_project_name(project)
        if project_scope is not None and project != project_scope:
            raise NotFound(f"this token may only log to project {project_scope}")
    elif number is None:
        raise Conflict(f"run {run_id} is unknown here and this batch does not start it: send its records from "
                       "the first one")
    kept = []
    for path, _size, sha256, _client_ref, mode in batch.artifacts:
        validate_relpath(path)
        if not isinstance(sha256, str) or not _SHA256.match(sha256):
            raise InvalidArgument("an artifact record names its content by its SHA-256 (64 lowercase hex digits)")
        size = artifacts.size(sha256)  # the server's own count, never the client's claim
        if size is not None:  # as in local mode, a record whose content never arrived is dropped
            kept.append((path, size, sha256, Blob(sha256, size).content_ref, mode))
    batch.artifacts = kept
    for item in batch.inputs:
        if item.source_run is not None and not _readable(store, item.source_run, project_scope):
            # One answer whether the run is missing or another project's: a token learns nothing of
            # runs it may not read, and links none of them to its own.
            raise InvalidArgument(f"input source_run: no run {item.source_run}"
                                  + (f" in project {project_scope}" if project_scope is not None else ""))
    try:
        result = store.ingest(batch)
    except (TypeError, ValueError, KeyError, AttributeError, IndexError) as e:
        if isinstance(e, RunyardError):  # refused with its own status (InvalidArgument, Unstorable, NotFound)
            raise
        # Records that decode but say something the store cannot apply (a status no run can have):
        # as malformed as those build_batch refuses, and no more applicable when sent again.
        raise InvalidArgument(f"records {batch.first_seq}..{batch.last_seq} of writer {writer} cannot be "
                              f"applied: {type(e).__name__}: {e}") from None
    if watcher is not None and result.applied:
        watcher.after_ingest(result.run_number, batch)
    if project is None:
        project = store.get_run(result.run_number).project
    return Applied(result.run_number, project, max(cursor, batch.last_seq))
