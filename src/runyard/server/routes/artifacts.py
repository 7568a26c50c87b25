"""Files: a run's artifacts (list, download with one byte range, upload), and content by its SHA-256
(which blobs the server lacks, upload, download), which snapshots, mounts and ingest refer to."""

from __future__ import annotations

import re
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Annotated, Any

import anyio
from fastapi import FastAPI, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, Field

from runyard import wire
from runyard.errors import ArtifactPathError, InvalidArgument, NotFound, TooLarge
from runyard.names import validate_relpath
from runyard.server import resumable
from runyard.server.bodies import BodyFile
from runyard.server.security import requires
from runyard.server.state import Server, error_response, principal_of
from runyard.store.artifacts import ArtifactStore

_PERCENT = re.compile(r"%[0-9A-Fa-f]{2}")


class BlobList(BaseModel):
    sha256: list[str] = Field(max_length=200_000)


def add_routes(app: FastAPI, server: Server) -> None:
    store = server.store
    v1 = wire.API_PREFIX

    @app.post(f"{v1}/blobs/missing", tags=["ingest"])
    @requires("writer")
    def missing_blobs(request: Request, body: BlobList) -> dict[str, list[str]]:
        """Which of these SHA-256s the caller must upload (PUT /blobs/{sha256}) before referring to
        them: those the server does not hold and, for a project token, those its project may not see
        yet (holding the bytes is the proof; the answer never says what other projects hold)."""
        wanted = [sha for sha in dict.fromkeys(body.sha256) if re.fullmatch(r"[0-9a-f]{64}", sha)]
        present = server.artifacts.has_many(wanted)
        held = [sha for sha in wanted if sha in present]
        if (scope := principal_of(request).project) is not None:
            seen = store.visible_content(scope, held)
            held = [sha for sha in held if sha in seen]
        have = set(held)
        return {"missing": [sha for sha in wanted if sha not in have]}

    @app.get(f"{v1}/runs/{{ref}}/artifacts", tags=["artifacts"])
    @requires("reader")
    def artifacts(request: Request, ref: str,
                  prefix: Annotated[str, Query(max_length=1024)] = "") -> list[dict[str, Any]]:
        """The run's artifacts (path, size, sha256)."""
        run = server.run_for(request, ref)
        return [wire.plain_out(a) for a in store.list_artifacts(run.number, prefix)]

    @app.get(f"{v1}/runs/{{ref}}/artifacts/{{path:path}}", tags=["artifacts"])
    @requires("reader")
    def download(request: Request, ref: str, path: str) -> Response:
        """An artifact's content, as an attachment; honours one ``Range: bytes=`` range."""
        run = server.run_for(request, ref)
        path = _artifact_path(path)
        entry = next((a for a in store.list_artifacts(run.number, path) if a.path == path), None)
        if entry is None:
            raise NotFound(f"run {run.number} has no artifact {path!r}")
        start, end, status = 0, entry.size, 200
        headers = {"content-disposition": f"attachment; filename*=UTF-8''{_quote(path.rsplit('/', 1)[-1])}",
                   "accept-ranges": "bytes", "etag": f'"{entry.sha256}"'}
        if (wanted := request.headers.get("range")) is not None:
            span = _parse_range(wanted, entry.size)
            if span is None:
                refused = error_response(416, "that byte range cannot be satisfied: the artifact has "
                                         f"{entry.size} bytes")
                refused.headers["content-range"] = f"bytes */{entry.size}"
                return refused
            (start, end), status = span, 206
            headers["content-range"] = f"bytes {start}-{end - 1}/{entry.size}"
        headers["content-length"] = str(end - start)
        return StreamingResponse(_read_span(server.artifacts, entry.content_ref, start, end), status_code=status,
                                 media_type="application/octet-stream", headers=headers)

    @app.put(f"{v1}/runs/{{ref}}/artifacts/{{path:path}}", tags=["artifacts"],
             openapi_extra={"requestBody": {"content": {"application/octet-stream": {"schema": {
                 "type": "string", "format": "binary"}}}, "required": True}})
    @requires("writer")
    async def upload(request: Request, ref: str, path: str) -> dict[str, Any]:
        """Store a file as an artifact of the run (the body is its content). Where it is kept is the
        server's choice; the path only names it within the run."""
        run = await anyio.to_thread.run_sync(server.run_for, request, ref)
        path = _artifact_path(path)
        blob = await _receive_blob(request, server)
        entry = await anyio.to_thread.run_sync(store.record_artifact, run.number, path, blob.size, blob.sha256,
                                               blob.content_ref)
        return wire.plain_out(entry)

    @app.put(f"{v1}/blobs/{{sha256}}", tags=["ingest"],
             openapi_extra={"requestBody": {"content": {"application/octet-stream": {"schema": {
                 "type": "string", "format": "binary"}}}, "required": True}})
    @requires("writer")
    async def put_blob(request: Request, sha256: str) -> dict[str, Any]:
        """Content named by its SHA-256, uploaded before the ingest batch that records it: whole, or
        in pieces that resume where they stopped (``Upload-Offset`` and ``Upload-Length`` headers;
        ``GET /blobs/{sha256}/upload`` says where an upload stands). A piece that does not complete
        the content answers ``{"offset": bytes arrived}``."""
        if not re.fullmatch(r"[0-9a-f]{64}", sha256):
            raise InvalidArgument("a blob is named by the lowercase hex SHA-256 of its content")
        position = resumable.upload_position(request.headers, server.limits.max_upload)
        if position is None:
            blob = await _receive_blob(request, server)
        else:
            async with server.uploads.slot():
                got = await resumable.receive_piece(request.stream(), server.artifacts.scratch, server.artifacts,
                                                    _caller(request), sha256, *position)
            if isinstance(got, int):
                return {"sha256": sha256, "offset": got}
            blob = got
        if blob.sha256 != sha256:
            raise InvalidArgument(f"the content's SHA-256 is {blob.sha256}, not {sha256}")
        if (scope := principal_of(request).project) is not None:
            # The bytes arrived, so the token holds them: its project may refer to them (even when
            # the store held them already, for whoever).
            await anyio.to_thread.run_sync(store.grant_content, scope, blob.sha256)
        return {"sha256": blob.sha256, "size": blob.size}

    @app.get(f"{v1}/blobs/{{sha256}}/upload", tags=["ingest"])
    @requires("writer")
    def blob_upload(request: Request, sha256: str) -> dict[str, Any]:
        """How many bytes of the caller's upload of this content have arrived (0: none), and whether
        the content is stored for the caller (its upload completed, even if the answer to its last
        piece was lost: then there is nothing more to send)."""
        if not re.fullmatch(r"[0-9a-f]{64}", sha256):
            raise InvalidArgument("a blob is named by the lowercase hex SHA-256 of its content")
        scope = principal_of(request).project
        stored = server.artifacts.has(sha256) and (scope is None or bool(store.visible_content(scope, [sha256])))
        return {"sha256": sha256, "offset": resumable.arrived(server.artifacts.scratch, _caller(request), sha256),
                "stored": stored}

    @app.get(f"{v1}/blobs/{{sha256}}", tags=["ingest"])
    @requires("reader")
    def get_blob(request: Request, sha256: str) -> Response:
        """Content by its SHA-256: what a run's supervisor on another machine (a Ray node) reads its
        code and mounts from. A project token gets only content its project may see (its runs'
        artifacts, and what was uploaded or granted for them); anything else is 404, held or not."""
        if not re.fullmatch(r"[0-9a-f]{64}", sha256):
            raise InvalidArgument("a blob is named by the lowercase hex SHA-256 of its content")
        scope = principal_of(request).project
        size = server.artifacts.size(sha256)
        if size is None or (scope is not None and sha256 not in store.visible_content(scope, [sha256])):
            raise NotFound(f"no content {sha256} here")
        return StreamingResponse(_read_span(server.artifacts, f"sha256:{sha256}", 0, size),
                                 media_type="application/octet-stream",
                                 headers={"content-length": str(size), "etag": f'"{sha256}"'})


def _caller(request: Request) -> str:
    """Whose upload this is: each token's pieces gather apart from every other's."""
    who = principal_of(request)
    return f"token {who.token_id}" if who.token_id is not None else who.name


def _artifact_path(path: str) -> str:
    """An artifact path from a URL, decoded exactly once (by the router) and then checked."""
    if _PERCENT.search(path) or any(c in path for c in "?#;"):
        raise ArtifactPathError(f"artifact path {path[:200]!r} contains an encoded or reserved character")
    return validate_relpath(path)


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """One byte range ``bytes=a-b`` / ``a-`` / ``-n`` as (start, end exclusive); None if unsatisfiable."""
    unit, _, spec = header.partition("=")
    if unit.strip() != "bytes" or "," in spec:
        return None
    first, _, last = spec.strip().partition("-")
    try:
        if first == "":
            n = int(last)
            return (max(0, size - n), size) if n > 0 and size > 0 else None
        start = int(first)
        end = int(last) + 1 if last else size
    except ValueError:
        return None
    end = min(end, size)
    return (start, end) if 0 <= start < end else None


def _quote(name: str) -> str:
    from urllib.parse import quote

    return quote(name, safe="")


def _read_span(artifacts: ArtifactStore, ref: str, start: int, end: int) -> Iterator[bytes]:
    """The bytes ``start``..``end`` of a blob. Opened here, before the response starts, so a blob that
    is missing or refused (a symlink out of the store) is a 404 or 400, not a truncated 200."""
    f = artifacts.open(ref)

    def chunks() -> Iterator[bytes]:
        with f:
            f.seek(start)
            left = end - start
            while left > 0:
                chunk = f.read(min(left, 1 << 20))
                if not chunk:
                    return
                left -= len(chunk)
                yield chunk

    return chunks()


#: msgpack's bin formats: the marker byte, and how many bytes of length follow it.
_BIN_HEADERS = {0xC4: 1, 0xC5: 2, 0xC6: 4}


async def _msgpack_bin(chunks: AsyncIterator[bytes]) -> tuple[int, bytes]:
    """The length a msgpack bin header declares, and the bytes after the header read with it."""
    head = b""
    async for chunk in chunks:
        head += chunk
        if head and head[0] not in _BIN_HEADERS:
            break
        if head and len(head) > _BIN_HEADERS[head[0]]:
            width = _BIN_HEADERS[head[0]]
            return int.from_bytes(head[1:1 + width], "big"), head[1 + width:]
    raise InvalidArgument("a msgpack upload body must be one bin value")


async def _receive_blob(request: Request, server: Server) -> Any:
    """Stream the body to a temporary file in the store, then add it by content. A msgpack body (one
    bin value) streams as well, past its header: no upload is held in memory, whatever its type,
    and none may pass the server's upload limit."""
    limit = server.limits.max_upload
    too_large = f"the upload is larger than the server takes ({limit >> 20} MiB)"
    content_type = request.headers.get("content-type", "").split(";")[0].strip()
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit + 5:  # a msgpack bin header takes up to 5 bytes
        raise TooLarge(too_large)
    tmp_dir = server.artifacts.scratch
    tmp_dir.mkdir(parents=True, exist_ok=True)
    async with server.uploads.slot():
        with tempfile.NamedTemporaryFile(dir=tmp_dir, prefix="upload-", delete=True) as tmp:
            body = BodyFile(tmp)  # written by worker threads: a disk that stalls must not stall the loop
            chunks = request.stream()
            declared = None
            if content_type == wire.MSGPACK:
                declared, first = await _msgpack_bin(chunks)
                if declared > limit:
                    raise TooLarge(too_large)
                if len(first) > declared:
                    raise InvalidArgument("a msgpack upload body must be one bin value, and nothing after it")
                await body.write(first)
                size = len(first)
            else:
                size = 0
            async for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    raise TooLarge(too_large)
                if declared is not None and size > declared:
                    raise InvalidArgument("a msgpack upload body must be one bin value, and nothing after it")
                await body.write(chunk)
            if declared is not None and size != declared:
                raise InvalidArgument(f"the msgpack bin value declares {declared} bytes; the body holds {size}")
            await body.flush()
            await anyio.to_thread.run_sync(tmp.flush)
            return await anyio.to_thread.run_sync(server.artifacts.put_file, Path(tmp.name))
