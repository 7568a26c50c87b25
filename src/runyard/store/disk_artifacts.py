"""The artifact store on disk: content-addressed files under ``root/objects/ab/cdef...``.

Two rules keep it safe:

* Paths inside a run are validated once, by :func:`runyard.names.validate_relpath`, and never
  decoded again: the store, not the client, decides where bytes live.
* Every file-system access is checked at the boundary: an object, a temporary file or an exported
  file whose real path leaves its root (through a symlink) is refused with ``ArtifactPathError``.

Writes are atomic: temporary file in the store, fsync, rename, fsync of the directory. Only
``runyard.store`` names this class; everything else uses ``ArtifactStore``
(``runyard.store.artifacts.open_artifacts``).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from runyard.errors import ArtifactError, ArtifactPathError, NotFound
from runyard.files import fsync_dir, place
from runyard.names import validate_relpath
from runyard.store.artifacts import CHUNK as _CHUNK
from runyard.store.artifacts import SHA as _SHA
from runyard.store.artifacts import Blob, Stored, put_file_with, sha_of_ref, stale_files

#: The index of packed objects, at the store's root (see ``DiskArtifacts.put_pack``).
PACK_INDEX = "packs.idx"


def _inside(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)


class DiskArtifacts:
    """Content-addressed files under ``root/objects/ab/cdef...``; identical content is stored once."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._packed: dict[str, tuple[str, int, int]] = {}
        self._index_size = 0

    @property
    def location(self) -> str:
        return str(self.root)

    @property
    def scratch(self) -> Path:
        return self.root / "tmp"

    # -- layout ---------------------------------------------------------------------------------

    def ensure(self) -> None:
        """Create the store's directories (explicitly, never in the constructor)."""
        for sub in ("objects", "tmp"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    def _real(self, sub: str) -> Path:
        root = self.root.resolve()
        real = (self.root / sub).resolve()
        if not _inside(real, root):
            raise ArtifactPathError(f"{self.root / sub} is a symlink leading out of the artifact store {root}")
        return real

    def _object_path(self, sha: str) -> Path:
        objects = self._real("objects")
        path = objects / sha[:2] / sha[2:]
        real = path.resolve()
        if not _inside(real, objects):
            raise ArtifactPathError(f"object {sha[:12]}... is a symlink leading out of the artifact store")
        return path

    # -- writing --------------------------------------------------------------------------------

    def put_bytes(self, data: bytes) -> Blob:
        sha = hashlib.sha256(data).hexdigest()
        return self._commit(sha, len(data), lambda f: f.write(data))

    def put_file(self, source: Path, progress: Stored | None = None) -> Blob:
        return put_file_with(self.put_stream, source, progress)

    def put_stream(self, src: BinaryIO) -> Blob:
        """Store what is left to read of an open file (one the caller opened safely, say)."""
        digest = hashlib.sha256()
        size = 0
        tmp = self._new_tmp()
        try:
            with os.fdopen(tmp[0], "wb") as out:
                while block := src.read(_CHUNK):
                    digest.update(block)
                    out.write(block)
                    size += len(block)
                out.flush()
                os.fsync(out.fileno())
            return self._place(digest.hexdigest(), size, Path(tmp[1]))
        except BaseException:
            Path(tmp[1]).unlink(missing_ok=True)
            raise

    def put_pack(self, sources: list[Path]) -> list[Blob]:
        """Store many small files as one pack: one file written and synced instead of one per file
        (creating a thousand files costs most of a second on some disks). The pack is itself a
        content-addressed object; an append-only index (``packs.idx``) says where each file's bytes
        are in it, and ``open``/``has`` look there when a file has no object of its own."""
        if not sources:
            return []
        blobs: list[Blob] = []
        entries: list[tuple[str, int, int]] = []
        fd, name = self._new_tmp()
        tmp = Path(name)
        try:
            pack_digest = hashlib.sha256()
            offset = 0
            with os.fdopen(fd, "wb") as out:
                for source in sources:
                    digest = hashlib.sha256()
                    size = 0
                    with source.open("rb") as src:
                        while block := src.read(_CHUNK):
                            digest.update(block)
                            pack_digest.update(block)
                            out.write(block)
                            size += len(block)
                    blobs.append(Blob(digest.hexdigest(), size))
                    entries.append((digest.hexdigest(), offset, size))
                    offset += size
                out.flush()
                os.fsync(out.fileno())
            pack = self._place(pack_digest.hexdigest(), offset, tmp)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        lines = "".join(f"{sha} {pack.sha256} {start} {size}\n" for sha, start, size in entries)
        index = self._real(".") / PACK_INDEX
        fd = os.open(index, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, lines.encode())  # one append: concurrent writers do not interleave lines
            os.fsync(fd)
        finally:
            os.close(fd)
        for sha, start, size in entries:
            self._packed[sha] = (pack.sha256, start, size)
        return blobs

    def _locate(self, sha256: str) -> tuple[str, int, int] | None:
        """Where a packed file's bytes are: (pack sha256, offset, size)."""
        if sha256 not in self._packed:
            self._load_index()
        where = self._packed.get(sha256)
        if where is not None and not os.path.isfile(  # noqa: PTH113 - `runyard gc` may have removed the pack
                os.path.join(self.root, "objects", where[0][:2], where[0][2:])):  # noqa: PTH118
            return None
        return where

    def _load_index(self) -> None:
        path = self.root / PACK_INDEX
        try:
            st = path.stat()
        except FileNotFoundError:
            return
        if st.st_size == self._index_size:
            return
        with path.open("rb") as f:
            f.seek(self._index_size)
            data = f.read()
        complete = data[: data.rfind(b"\n") + 1]  # a line being appended right now is not read yet
        for line in complete.decode().splitlines():
            parts = line.split()
            if len(parts) == 4:
                self._packed[parts[0]] = (parts[1], int(parts[2]), int(parts[3]))
        self._index_size += len(complete)

    def put_tree(self, source: Path) -> list[tuple[str, Blob]]:
        """Store every file under ``source``; returns (relative path, blob) pairs, sorted by path.

        A symlink is followed when it points inside ``source`` and refused when it points outside,
        so a logged directory cannot smuggle in files from elsewhere on the machine.
        """
        source = Path(source)
        if not source.is_dir():
            raise NotFound(f"cannot store {source}: no such directory")
        root = source.resolve()
        out = []
        for rel, path in sorted(walk_tree(source, root, set())):
            out.append((rel, self.put_file(path)))
        return out

    def unfinished(self, before: float, remove: bool) -> list[tuple[str, int]]:
        return stale_files(self._real("tmp"), before, remove)

    def _new_tmp(self) -> tuple[int, str]:
        return tempfile.mkstemp(dir=self._real("tmp"), prefix="put-")

    def _commit(self, sha: str, size: int, write: Callable[[BinaryIO], object]) -> Blob:
        fd, name = self._new_tmp()
        try:
            with os.fdopen(fd, "wb") as out:
                write(out)
                out.flush()
                os.fsync(out.fileno())
            return self._place(sha, size, Path(name))
        except BaseException:
            Path(name).unlink(missing_ok=True)
            raise

    def _place(self, sha: str, size: int, tmp: Path) -> Blob:
        target = self._object_path(sha)
        if target.exists():
            tmp.unlink()  # deduplicated: the content is already there
            # stored again now: `runyard gc` keeps what was written recently, reference or not yet
            with contextlib.suppress(OSError):
                os.utime(target)
            return Blob(sha, size)
        target.parent.mkdir(exist_ok=True)
        if target.parent.is_symlink():
            tmp.unlink()
            raise ArtifactPathError(f"{target.parent} is a symlink; refusing to write through it")
        tmp.chmod(0o444)
        tmp.replace(target)
        fsync_dir(target.parent)
        return Blob(sha, size)

    # -- reading --------------------------------------------------------------------------------

    def has(self, sha256: str) -> bool:
        """Whether the content is stored: a cheap check (no symlink resolution) for hot loops;
        reading it still goes through ``open``'s checks."""
        if not _SHA.match(sha256):
            return False  # never a path component from outside: "../../etc/passwd" is no name here
        # os.path, not pathlib: called once per file of a snapshot, where pathlib's overhead shows.
        if os.path.isfile(os.path.join(self.root, "objects", sha256[:2], sha256[2:])):  # noqa: PTH113, PTH118
            return True
        return self._locate(sha256) is not None

    def has_many(self, shas: Iterable[str]) -> set[str]:
        """Which of ``shas`` are stored (a local check per file is cheaper than any batching)."""
        return {sha for sha in shas if self.has(sha)}

    def size(self, sha256: str) -> int | None:
        """Bytes of stored content, or None if it is not stored (or not a SHA-256)."""
        if not _SHA.match(sha256):
            return None
        where = self._locate(sha256)
        if where is not None:
            return where[2]
        try:
            return self._object_path(sha256).stat().st_size
        except (FileNotFoundError, ArtifactPathError):
            return None

    def exists(self, content_ref: str) -> bool:
        sha = sha_of_ref(content_ref)
        return self._object_path(sha).is_file() or self._locate(sha) is not None

    def open(self, content_ref: str) -> BinaryIO:
        sha = sha_of_ref(content_ref)
        path = self._object_path(sha)
        if not path.exists() and (where := self._locate(sha)) is not None:
            pack, start, size = where
            with self.open(f"sha256:{pack}") as f:
                f.seek(start)
                return io.BytesIO(f.read(size))
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            raise NotFound(f"artifact content {content_ref[:19]}... is missing from the store") from None
        except OSError as e:
            raise ArtifactError(f"cannot read artifact content {content_ref[:19]}...: {e.strerror}") from None
        return os.fdopen(fd, "rb")

    def read_bytes(self, content_ref: str) -> bytes:
        with self.open(content_ref) as f:
            return f.read()

    def export(self, content_ref: str, dest_root: Path, relpath: str) -> Path:
        """Copy a blob to ``dest_root/relpath`` atomically, never following a symlink out of dest_root."""
        target = place(dest_root, relpath)
        fd, name = tempfile.mkstemp(dir=target.parent, prefix=".runyard-")
        try:
            with os.fdopen(fd, "wb") as out, self.open(content_ref) as src:
                shutil.copyfileobj(src, out, _CHUNK)
                out.flush()
                os.fsync(out.fileno())
            Path(name).replace(target)
        except BaseException:
            Path(name).unlink(missing_ok=True)
            raise
        return target

    def share(self, content_ref: str, dest_root: Path, relpath: str, hard_link: bool) -> str | None:
        """Place a blob at ``dest_root/relpath`` without copying its bytes, where the file system
        allows: a reflink (a copy-on-write clone: a writable file of its own that shares blocks),
        else, with ``hard_link``, a hard link to the stored object. Returns "reflink" or "link", or
        None when neither was possible (a packed blob, another file system): then copy it.

        A hard link IS the stored object: it is read-only (mode 0444, like every object), and the
        caller must make sure whoever uses it cannot write it anyway (root ignores modes).
        """
        sha = sha_of_ref(content_ref)
        source = self._object_path(sha)
        if not source.is_file() or source.is_symlink():
            return None  # packed with others, or missing: no file of its own to share
        target = place(dest_root, relpath)
        if target.exists():
            return None
        if _reflink(source, target):
            return "reflink"
        if not hard_link:
            return None
        if source.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
            source.chmod(0o444)  # an object from before objects were read-only
        try:
            os.link(source, target)
        except OSError:
            return None  # another file system, too many links, or links refused: copy
        return "link"

    # -- reclaiming (runyard gc) -----------------------------------------------------------------

    def objects(self) -> Iterator[tuple[str, int, float]]:
        """Every stored object: (sha256, bytes, last written as a time); packs are objects too."""
        objects = self.root / "objects"
        if not objects.is_dir():
            return
        for shard in sorted(os.scandir(objects), key=lambda e: e.name):
            if not shard.is_dir(follow_symlinks=False) or len(shard.name) != 2:
                continue
            for entry in os.scandir(shard.path):
                sha = shard.name + entry.name
                if _SHA.match(sha) and entry.is_file(follow_symlinks=False):
                    st = entry.stat(follow_symlinks=False)
                    yield sha, st.st_size, st.st_mtime

    def pack_members(self) -> dict[str, set[str]]:
        """Which files each pack holds, from the pack index (a pack may be removed only with all of them)."""
        members: dict[str, set[str]] = {}
        try:
            data = (self.root / PACK_INDEX).read_bytes()
        except FileNotFoundError:
            return members
        for line in data[: data.rfind(b"\n") + 1].decode().splitlines():
            parts = line.split()
            if len(parts) == 4:
                members.setdefault(parts[1], set()).add(parts[0])
        return members

    def remove(self, sha256: str) -> int:
        """Delete a stored object; returns the bytes freed (0 if it was not there). Only for ``runyard gc``,
        which has checked that nothing refers to it."""
        if not _SHA.match(sha256):
            raise ArtifactError(f"not a SHA-256: {sha256!r}")
        path = self._object_path(sha256)
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            return 0
        return size  # index lines naming a removed pack are ignored: _locate checks the pack exists


#: Linux's FICLONE ioctl: make ``dest`` share ``source``'s blocks, copy-on-write (btrfs, XFS...).
_FICLONE = 0x40049409


def _reflink(source: Path, target: Path) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    import fcntl

    try:
        src = os.open(source, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        dst = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except OSError:
        os.close(src)
        return False
    try:
        fcntl.ioctl(dst, _FICLONE, src)
        return True
    except OSError:
        os.close(dst)
        dst = -1
        target.unlink(missing_ok=True)  # this file system cannot share blocks
        return False
    finally:
        os.close(src)
        if dst >= 0:
            os.close(dst)


def walk_tree(directory: Path, root: Path, seen: set[Path], prefix: str = "") -> Iterator[tuple[str, Path]]:
    real_dir = directory.resolve()
    if real_dir in seen:
        raise ArtifactError(f"{directory} is reached twice through symlinks (a loop); refusing to store it")
    seen.add(real_dir)
    for entry in os.scandir(directory):
        rel = f"{prefix}{entry.name}"
        path = Path(entry.path)
        if entry.is_symlink():
            real = path.resolve()
            if not _inside(real, root):
                raise ArtifactPathError(f"{path} is a symlink to {real}, outside {root}; refusing to store it")
        mode = path.stat().st_mode
        if stat.S_ISDIR(mode):
            yield from walk_tree(path, root, seen, rel + "/")
        elif stat.S_ISREG(mode):
            yield validate_relpath(rel), path
        else:
            raise ArtifactError(f"{path} is neither a file nor a directory; refusing to store it")

