"""Uploads of content that resume where they stopped: a checkpoint a Ray node sends through the
server goes in pieces, and a piece cut short (the node's network, a killed supervisor, a restarted
server) costs that piece, not the whole file.

A piece is ``PUT /blobs/{sha256}`` with ``Upload-Offset`` (where it starts) and ``Upload-Length``
(the whole content's size); ``GET /blobs/{sha256}/upload`` says how much has arrived. The bytes
gather in a file of the store's scratch directory named after the caller and the content, so one
token's upload can be neither spoiled nor finished by another's. The piece that completes it has the
content checked against its name and stored; a mismatch discards it all. A piece that does not start
where the upload stands is refused (409) and the caller asks where it stands. Files nobody finished
go with ``runyard gc`` (the store's ``unfinished``: scratch files untouched for its grace period).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

import anyio

from runyard.errors import Conflict, InvalidArgument, TooLarge
from runyard.server.bodies import BodyFile
from runyard.store.artifacts import PARTIAL_PREFIX, ArtifactStore, Blob

#: Unfinished uploads one caller may have at once: a new one past this is refused until one ends
#: (finished, or removed by `runyard gc`).
MAX_UNFINISHED = 16


def _caller_prefix(caller: str) -> str:
    return f"{PARTIAL_PREFIX}{hashlib.sha256(caller.encode()).hexdigest()[:24]}-"


def partial_path(scratch: Path, caller: str, sha256: str) -> Path:
    """Where one caller's upload of one content gathers."""
    return scratch / f"{_caller_prefix(caller)}{sha256}"


def _unfinished(scratch: Path, caller: str) -> int:
    prefix = _caller_prefix(caller)
    with os.scandir(scratch) as entries:
        return sum(1 for entry in entries if entry.name.startswith(prefix))


def arrived(scratch: Path, caller: str, sha256: str) -> int:
    """Bytes of this caller's upload of this content the server holds."""
    try:
        return partial_path(scratch, caller, sha256).stat().st_size
    except FileNotFoundError:
        return 0


def upload_position(headers: Any, limit: int) -> tuple[int, int] | None:
    """(offset, length) from a piece's headers, or None for a whole upload."""
    offset, length = headers.get("upload-offset"), headers.get("upload-length")
    if offset is None and length is None:
        return None
    if offset is None or length is None or not offset.isdigit() or not length.isdigit():
        raise InvalidArgument("a piece of an upload needs Upload-Offset and Upload-Length, both whole numbers")
    start, total = int(offset), int(length)
    if total > limit:
        raise TooLarge(f"the upload is larger than the server takes ({limit >> 20} MiB)")
    if start > total:
        raise InvalidArgument(f"Upload-Offset {start} is past Upload-Length {total}")
    return start, total


async def receive_piece(chunks: AsyncIterator[bytes], scratch: Path, artifacts: ArtifactStore, caller: str,
                        sha256: str, start: int, total: int) -> Blob | int:
    """Append one piece; the stored content when it completes the upload, else the bytes arrived."""
    scratch.mkdir(parents=True, exist_ok=True)
    path = partial_path(scratch, caller, sha256)
    creating = start == 0 and not path.exists()
    if creating and _unfinished(scratch, caller) >= MAX_UNFINISHED:
        raise Conflict(f"{MAX_UNFINISHED} uploads of this token are unfinished: finish one (GET /blobs/SHA/upload "
                       "says where each stands) before starting another")
    with _locked(path, create=creating or start == 0, sha256=sha256) as f:
        held = os.fstat(f.fileno()).st_size
        if held != start:
            raise Conflict(f"this upload stands at byte {held}, not {start}: ask GET /blobs/{sha256}/upload "
                           "and send from there")
        body = BodyFile(f)
        size = held
        async for chunk in chunks:
            size += len(chunk)
            if size > total:
                break
            await body.write(chunk)
        await body.flush()
        await anyio.to_thread.run_sync(f.flush)
        if size > total:
            await anyio.to_thread.run_sync(_truncate, f, held)  # the piece is refused whole
            raise InvalidArgument(f"the piece runs past Upload-Length {total}")
        if size == held and size < total:
            raise InvalidArgument("an empty piece: send the bytes from Upload-Offset on")
        if size < total:
            return size
        try:
            f.seek(0)
            # Stored from this file, under its lock: never from the path, which a new upload of the
            # same content may take once this one is gone.
            blob = await anyio.to_thread.run_sync(artifacts.put_stream, cast(BinaryIO, f))
        finally:
            _unlink_if_same(path, f)
    if blob.sha256 != sha256:
        raise InvalidArgument(f"the content's SHA-256 is {blob.sha256}, not {sha256}; the upload was discarded")
    return blob


def _truncate(f: IO[bytes], size: int) -> None:
    f.truncate(size)
    f.seek(size)


def _unlink_if_same(path: Path, f: IO[bytes]) -> None:
    with contextlib.suppress(FileNotFoundError):
        if path.stat().st_ino == os.fstat(f.fileno()).st_ino:
            path.unlink()


@contextlib.contextmanager
def _locked(path: Path, create: bool, sha256: str) -> Iterator[IO[bytes]]:
    """The partial file, open for appending and held by this request alone (a retry racing the
    request it retries would interleave their bytes). Created only for a piece at offset 0: a piece
    further on of an upload the server does not hold leaves nothing behind."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | (os.O_CREAT if create else 0), 0o600)
    except FileNotFoundError:
        raise Conflict(f"this upload stands at byte 0: ask GET /blobs/{sha256}/upload and send from there") from None
    f = os.fdopen(fd, "r+b")
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Conflict("a piece of this upload is arriving already; ask where it stands once it ends") from None
        try:
            same = path.stat().st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # completed (and removed) by the request that held the lock before this one
            raise Conflict(f"this upload ended meanwhile: ask GET /blobs/{sha256}/upload where it stands")
        f.seek(0, os.SEEK_END)
        yield f
    finally:
        f.close()
