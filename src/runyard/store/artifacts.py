"""Artifact bytes, addressed by content: the ``ArtifactStore`` protocol and the one place a backend is chosen.

The store only knows blobs by their SHA-256; which run holds which path is in the SQL index
(``artifacts`` table). Two backends implement the protocol: ``DiskArtifacts`` (a directory,
``runyard.store.disk_artifacts``) and ``S3Artifacts`` (a bucket and prefix on any S3-compatible
server, ``runyard.store.s3_artifacts``). Only this package names them (an import contract says so);
everything else gets its store from :func:`open_artifacts` and types against ``ArtifactStore``.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol

from runyard.errors import ArtifactError, NotFound
from runyard.names import validate_relpath

if TYPE_CHECKING:
    from runyard.config import Settings

__all__ = ["ArtifactStore", "Blob", "open_artifacts", "sha_of_ref", "validate_relpath"]

#: Bytes read or written at a time when copying content.
CHUNK = 1 << 20
#: The URL scheme of an S3 location (``s3://bucket/prefix``).
S3_SCHEME = "s3://"
_REF = re.compile(r"^sha256:([0-9a-f]{64})$")
SHA = re.compile(r"^[0-9a-f]{64}$")


#: Scratch files of uploads that arrive in pieces (server/resumable.py) begin with this: ``unfinished``
#: removes those nobody finished, wherever the scratch directory is.
PARTIAL_PREFIX = "partial-"


@dataclass(frozen=True)
class Blob:
    sha256: str
    size: int

    @property
    def content_ref(self) -> str:
        return f"sha256:{self.sha256}"


def sha_of_ref(content_ref: str) -> str:
    m = _REF.match(content_ref)
    if not m:
        raise ArtifactError(f"not a content reference: {content_ref!r} (expected sha256:<64 hex digits>)")
    return m.group(1)


#: Told of bytes stored since it was last told (a progress bar advances by them).
Stored = Callable[[int], None]


def stale_files(directory: Path, before: float, remove: bool, prefix: str = "") -> list[tuple[str, int]]:
    """Regular files of ``directory`` named ``prefix...`` and untouched since ``before``, as (name,
    bytes): uploads a writer never finished. Removed unless ``remove`` is false."""
    found = []
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(directory):
            with contextlib.suppress(OSError):
                st = entry.stat(follow_symlinks=False)
                if entry.name.startswith(prefix) and stat.S_ISREG(st.st_mode) and st.st_mtime < before:
                    if remove:
                        Path(entry.path).unlink()
                    found.append((entry.name, st.st_size))
    return found


def put_file_with(put_stream: Callable[[BinaryIO], Blob], source: Path, progress: Stored | None = None) -> Blob:
    """Store a file through a store's ``put_stream``, a missing file or a directory said in words;
    ``progress`` is told of the bytes as they are read from it."""
    source = Path(source)
    try:
        with source.open("rb") as src:
            return put_stream(src if progress is None else CountedReads(src, progress))  # type: ignore[arg-type]
    except FileNotFoundError:
        raise NotFound(f"cannot store {source}: no such file") from None
    except IsADirectoryError:
        raise ArtifactError(f"cannot store {source} as a file: it is a directory") from None


class CountedReads:
    """A file being read whose reads are told to ``progress`` (bytes read by each)."""

    def __init__(self, src: BinaryIO, progress: Stored) -> None:
        self._src, self._progress = src, progress

    def read(self, size: int = -1) -> bytes:
        block = self._src.read(size)
        if block:
            self._progress(len(block))
        return block

    def __iter__(self) -> Iterator[bytes]:  # what an HTTP client sends it by
        while block := self.read(CHUNK):
            yield block

    def __getattr__(self, name: str) -> object:
        return getattr(self._src, name)


class ArtifactStore(Protocol):
    """Where artifact bytes live, addressed by content (a SHA-256, or a ``sha256:...`` reference)."""

    @property
    def location(self) -> str:
        """Where the store is, for people: a directory, or ``s3://bucket/prefix``."""
        ...

    @property
    def scratch(self) -> Path:
        """A local directory for temporary files on their way into the store (uploads being received)."""
        ...

    def ensure(self) -> None:
        """Create what the store needs (directories), explicitly: constructors do no I/O."""
    def put_file(self, source: Path, progress: Stored | None = None) -> Blob:
        """Store a file; ``progress`` is told of its bytes as they are stored (sent, on S3)."""
        ...

    def put_stream(self, src: BinaryIO) -> Blob: ...
    def put_bytes(self, data: bytes) -> Blob: ...
    def put_pack(self, sources: list[Path]) -> list[Blob]:
        """Store many small files at once (one object and an index of where each file is in it)."""
    def put_tree(self, source: Path) -> list[tuple[str, Blob]]: ...
    def has(self, sha256: str) -> bool: ...
    def has_many(self, shas: Iterable[str]) -> set[str]:
        """Which of ``shas`` are stored: one call for a snapshot's thousand files, batched by the backend."""
    def size(self, sha256: str) -> int | None: ...
    def exists(self, content_ref: str) -> bool: ...
    def open(self, content_ref: str) -> BinaryIO:
        """The content as a file: seekable, read as it is consumed (never all in memory at once)."""
    def read_bytes(self, content_ref: str) -> bytes: ...
    def export(self, content_ref: str, dest_root: Path, relpath: str) -> Path:
        """Copy a blob to ``dest_root/relpath`` atomically, never following a symlink out of dest_root."""
    def share(self, content_ref: str, dest_root: Path, relpath: str, hard_link: bool) -> str | None:
        """Place a blob without copying its bytes where possible ("reflink", "link"), else None: copy it."""
    def objects(self) -> Iterator[tuple[str, int, float]]:
        """Every stored object: (sha256, bytes, last written as a time); packs are objects too."""
    def pack_members(self) -> dict[str, set[str]]:
        """Which files each pack holds (a pack may be removed only with all of them)."""
    def remove(self, sha256: str) -> int:
        """Delete a stored object; returns the bytes freed (0 if it was not there)."""
    def unfinished(self, before: float, remove: bool) -> list[tuple[str, int]]:
        """Uploads begun before ``before`` (a time) and never finished, as (name, bytes): temporary
        files of a writer that died, multipart uploads whose sender went away. Removed (aborted)
        unless ``remove`` is false."""


def open_artifacts(location: str | Path, *, s3_endpoint: str | None = None,
                   scratch: Path | None = None) -> ArtifactStore:
    """The store at ``location``: ``s3://bucket/prefix`` (on ``s3_endpoint``, else AWS's), or a directory.

    Nothing is read or written here (see ``ensure``); boto3 loads only for an S3 location.
    ``scratch`` is where an S3 store keeps temporary files (default: the system's temporary directory).
    """
    text = str(location)
    if text.startswith(S3_SCHEME):
        from runyard.store.s3_artifacts import S3Artifacts

        return S3Artifacts.from_url(text, endpoint=s3_endpoint, scratch=scratch)
    from runyard.store.disk_artifacts import DiskArtifacts

    return DiskArtifacts(Path(text))


def artifacts_of(settings: Settings) -> ArtifactStore:
    """The artifact store the settings name (``artifacts``, ``s3_endpoint``)."""
    return open_artifacts(settings.artifacts, s3_endpoint=settings.s3_endpoint, scratch=settings.home / "tmp")


def local_cache_of(settings: Settings) -> ArtifactStore:
    """This machine's own store on disk: the configured one, or the home's ``artifacts`` directory
    when the configured one is S3 (a client of a server snapshots here before uploading)."""
    if settings.artifacts.startswith(S3_SCHEME):
        return open_artifacts(settings.home / "artifacts")
    return open_artifacts(settings.artifacts)
