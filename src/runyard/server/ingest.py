"""The ingest endpoint's work: spool records sent by a shipper, applied like the local agent does.

The body is a msgpack map of ``run_id``, ``writer`` and ``items``: the writer's records in the
form readers see them (see spool/records.py: metrics as one map with reserved keys, every other
record as an array), compressed with zlib. It is decoded with size limits and never into
anything but plain values; records are applied only past the store's cursor for (run, writer), so
a batch sent twice changes nothing. Artifact records must name content already uploaded to
``/blobs`` (the shipper uploads it first; a record whose content never arrived is dropped, as in
local mode): the server keeps its own content reference, whatever the client wrote. A token
limited to one project may name only content that its project's runs refer to or that it uploaded
(store/blobs_sql.py); knowing a hash is not enough.

A batch the server can never apply is refused with a 4xx naming the reason, so a shipper stops
sending it rather than retrying forever: 400 when the records are malformed, 413 when they are more
than one request may carry (the shipper sends them again in halves), 422 when they are well formed
but the database refuses to store them (a NUL character in PostgreSQL text, a number beyond its
column's range), 404 or 409 when they name a run this token may not log to, or that does not exist
here. 503 (with ``Retry-After``) means only that the database or the server is busy: the same batch
may succeed later.
"""

from __future__ import annotations

import bisect
import itertools
import re
import time
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import msgpack

from runyard.errors import Conflict, InvalidArgument, NotFound, RunyardError, TooLarge
from runyard.ingest.alerting import Watcher
from runyard.ingest.apply import build_batch
from runyard.names import validate_project_name, validate_relpath
from runyard.server.security import MAX_BODY as MAX_BODY  # the route's limit, one value
from runyard.spool import records
from runyard.store.api import IngestBatch, LogLine
from runyard.store.artifacts import ArtifactStore, Blob
from runyard.store.sql import SqlStore

#: What an ingest body may hold, inflated or sent as is: the client sends at most 32 MiB of msgpack
#: (client.MAX_INGEST_BYTES), and sends again in halves a batch refused as too large (413). The body
#: itself may be a little larger (MAX_BODY, security.py): deflate adds a few bytes to what it cannot shrink.
MAX_INFLATED = 32 << 20
#: Bounds on what one request may declare, so a small body cannot make the server allocate much:
#: elements of one array, pairs of one map, and values in all (every array and map, plus what they
#: hold). A value costs a Python object of 8-100 bytes however few bytes encode it (a 1-byte nil, a
#: 1-byte empty map), so the total, not the body's size, is what bounds the memory a request takes.
MAX_RECORDS = 100_000
MAX_KEYS = 100_000
MAX_VALUES = 1_000_000
#: Sequence numbers are kept in 64-bit signed columns.
SEQ_LIMIT = 1 << 63
_RUN_ID = re.compile(r"^[0-9A-Za-z]{10,64}$")
_WRITER = re.compile(r"^[0-9A-Za-z_-]{1,64}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_DIFF_REF = re.compile(r"^sha256:[0-9a-f]{64}$")


@dataclass(frozen=True)
class Applied:
    run_number: int | None
    project: str | None
    #: Highest sequence number of this writer the server holds.
    cursor: int


def _no_extension(code: int, data: bytes) -> Any:
    # No writer sends msgpack extension types: they would reach the store as objects it cannot keep.
    raise InvalidArgument(f"the body holds a msgpack extension type ({code}); records hold plain values only")


#: Bytes inflated at a time: decoding goes on piece by piece, so a body refused for its values is
#: refused after the piece that passed the count, not after inflating all of it.
PIECE = 1 << 20


#: Bytes given to the msgpack unpacker at a time (see ``unpack``).
UNPACK_SLICE = 64 << 10


def inflated(body: bytes, limit: int = MAX_INFLATED) -> Iterator[bytes]:
    """A deflated body's content, PIECE bytes at a time, refused (413) as soon as it passes ``limit``.

    The body must be one whole zlib stream and nothing else: zlib checks the Adler-32 trailer when
    the stream ends (a mismatch is an error), a body cut short never ends, and bytes after the end
    (another batch appended, say) are refused too, since they would otherwise be dropped unread.
    Records are applied only once the last piece has passed these checks: a refused body applies nothing."""
    inflater = zlib.decompressobj()
    pending, total = body, 0
    while True:
        try:
            piece = inflater.decompress(pending, PIECE)
        except zlib.error as e:
            raise InvalidArgument(f"the body is not valid deflate data: {e}") from None
        pending = inflater.unconsumed_tail
        total += len(piece)
        if total > limit:
            raise TooLarge(f"the body inflates beyond {limit >> 20} MiB; send smaller batches")
        if piece:
            yield piece
        if inflater.eof:
            if inflater.unused_data or pending:
                raise InvalidArgument("the body is not valid deflate data: it goes on after the end of its stream")
            return
        if not piece and not pending:
            raise InvalidArgument("the body is not valid deflate data: it ends before the stream does")


def unpack(pieces: Iterable[bytes], max_values: int = MAX_VALUES) -> Any:
    """One msgpack value from its bytes, in pieces, counting values as they are built: past
    ``max_values`` values in all (or an array, map, string beyond its own bound) the body is refused
    before it takes more memory or time, even if its end has not been inflated yet."""
    left = max_values

    def count(container: Any) -> Any:
        nonlocal left
        left -= len(container) + 1
        if left < 0:
            raise TooLarge(f"items: the body holds more than {max_values:,} values (arrays, maps and what they "
                           "hold); send fewer records per request")
        return container

    unpacker = msgpack.Unpacker(raw=False, strict_map_key=True, use_list=True, max_array_len=MAX_RECORDS,
                                max_map_len=MAX_KEYS, max_str_len=MAX_INFLATED, max_bin_len=MAX_INFLATED,
                                max_buffer_size=MAX_INFLATED + PIECE, ext_hook=_no_extension, list_hook=count,
                                object_hook=count)
    values, fed = [], 0
    try:
        for piece in pieces:
            # Fed a slice at a time: the unpacker builds what a slice holds in one call that keeps the
            # GIL (a 1 MiB slice of nils, a million values: some 20 ms in which no other thread, the
            # event loop included, runs); between slices the other threads get their turn.
            for start in range(0, len(piece), UNPACK_SLICE):
                unpacker.feed(piece[start:start + UNPACK_SLICE])
                values.extend(unpacker)
            fed += len(piece)
            if len(values) > 1:
                break
    except InvalidArgument:
        raise
    except ValueError as e:
        if "exceeds max_" in str(e):  # msgpack's own bound on one array, map or string
            raise TooLarge(f"items: an array, map or string is longer than one request takes ({e}); send fewer "
                           "records per request") from None
        raise InvalidArgument(f"the body is not valid msgpack: {type(e).__name__}") from None
    except Exception as e:  # noqa: BLE001 - msgpack raises several types for malformed input
        raise InvalidArgument(f"the body is not valid msgpack: {type(e).__name__}") from None
    if len(values) != 1 or unpacker.tell() != fed:
        raise InvalidArgument("the body is not valid msgpack: it must hold exactly one value")
    return values[0]


def decode(body: bytes, deflated: bool) -> tuple[str, str, list[Any]]:
    if not deflated and len(body) > MAX_INFLATED:
        raise TooLarge(f"the body is larger than {MAX_INFLATED >> 20} MiB; send smaller batches")
    payload = unpack(inflated(body) if deflated else (body,))
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


def apply(store: SqlStore, artifacts: ArtifactStore, run_id: str, writer: str, items: list[Any],
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
    for path, _size, sha256, _client_ref, _mode in batch.artifacts:
        validate_relpath(path)
        if not isinstance(sha256, str) or not _SHA256.match(sha256):
            raise InvalidArgument("an artifact record names its content by its SHA-256 (64 lowercase hex digits)")
    if project_scope is not None:
        _within(store, project_scope, batch)
    kept = []
    for path, _size, sha256, _client_ref, mode in batch.artifacts:
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


def _within(store: SqlStore, project: str, batch: IngestBatch) -> None:
    """Keep only the content references a token limited to ``project`` may make: to content a run
    of the project refers to, or that the token uploaded (knowing a hash proves nothing). Any other
    is dropped as content that never arrived, and the run's log says so: the same words whether
    the server holds that content for another project or not at all."""
    diffs = dict(_diff_refs(batch))
    wanted = [sha for _, _, sha, _, _ in batch.artifacts]
    wanted += [ref.removeprefix("sha256:") for ref in diffs.values() if _DIFF_REF.match(ref)]
    seen = store.visible_content(project, wanted) if wanted else set()
    kept = []
    for record in batch.artifacts:
        path, sha256 = record[0], record[2]
        if sha256 in seen:
            kept.append(record)
        else:
            batch.logs.append(LogLine(batch.heartbeat or time.time(), f"artifact {path!r} not recorded: its "
                                      f"content (sha256 {sha256[:12]}...) was not uploaded", "system"))
    batch.artifacts = kept
    for where, ref in diffs.items():
        if not _DIFF_REF.match(ref) or ref.removeprefix("sha256:") not in seen:
            _drop_diff_ref(batch, where)


def _diff_refs(batch: IngestBatch) -> list[tuple[str, str]]:
    """The uncommitted diff's content references the batch names: (where, ref)."""
    found = []
    start_env = batch.start.get("environment") if batch.start is not None else None
    for where, env in (("start", start_env), ("environment", batch.environment)):
        if isinstance(env, dict) and "git_diff_ref" in env:
            found.append((where, str(env["git_diff_ref"])))
    return found


def _drop_diff_ref(batch: IngestBatch, where: str) -> None:
    if where == "start" and batch.start is not None:
        env = {k: v for k, v in batch.start["environment"].items() if k != "git_diff_ref"}
        batch.start = {**batch.start, "environment": env}
    else:
        batch.environment.pop("git_diff_ref", None)
