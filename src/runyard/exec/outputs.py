"""Keeping what a launched run wrote: stored while the run goes on, from a thread of its own.

A run's outputs are the files it created or changed in its working directory: ``outputs/`` as
ever, and also what typical scripts write next to themselves (``traindata.pt``, ``predict.pdf``,
``checkpoints/``). A file is kept under its path relative to the working directory, so
``outputs/model.pt`` stays ``outputs/model.pt`` and ``traindata.pt`` is ``traindata.pt``. Not kept:
a file identical to the code snapshot's file at that path (it is code, not an output), what the
supervisor placed there (mounts, ``runyard-params.json``), caches and environments (``NEVER_KEPT``),
and, outside ``outputs/``, what ``.runyardignore`` lists and files above the size limit (the run's
log says which and why). ``outputs/`` itself is kept whole, as before: it is where a script says
"keep this", and ``.runyardignore`` often lists it to keep old outputs out of snapshots.

The supervisor's loop only watches the command (stop, timeout, exit), so a pass over gigabytes of
checkpoints never delays a stop or a timeout. A pass stores each file that changed since it was
last stored straight into the content-addressed artifact store (the one the run's code came
from): one copy, no staging copy in the spool, and content already there is not written again.
Its artifact record goes to the spool like every other record.

While the command runs, a file is stored only once it has settled: no process of the run has it
open for writing and it has not changed for ``SETTLE`` seconds. A checkpoint written over minutes
is stored once, whole, instead of once per partial state a pass happened to see. After the command
has ended, the final pass stores whatever changed.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from runyard.errors import RunyardError
from runyard.exec.snapshot import ignore_patterns, ignored
from runyard.names import validate_relpath
from runyard.store.artifacts import ArtifactStore

OUTPUTS = "outputs"
#: Written by the supervisor for the run's parameters: an input, not an output.
PARAMS_FILE = "runyard-params.json"
#: Directories never kept: caches, environments and tools' state a run leaves in its directory.
NEVER_KEPT = frozenset({".git", ".runyard", "__pycache__", ".ipynb_checkpoints", ".venv", "venv", "site-packages",
                        "node_modules", ".mypy_cache", ".pytest_cache", ".ruff_cache"})
#: Default size limit for a file kept from outside ``outputs/`` (setting ``output_limit``, in MiB).
LIMIT = 1 << 30
#: Seconds a file must stay unchanged before a pass stores it while the command runs.
SETTLE = 1.0
_CHUNK = 1 << 20


class Outputs:
    """The uploads of the files one run creates or changes in its working directory ``directory``.

    ``record(path, size, sha256, mode)`` queues an artifact record for stored content; ``say``
    writes a line to the run's log; ``writing()`` names the files the run's processes hold open for
    writing; ``limit`` is the size above which a file outside ``outputs/`` is not kept.
    """

    def __init__(self, directory: Path, store: ArtifactStore, record: Callable[[str, int, str, int], None],
                 say: Callable[[str], None], writing: Callable[[], set[str]] = set, limit: int = LIMIT) -> None:
        self.directory = directory
        self.store = store
        self.record = record
        self.say = say
        self.writing = writing
        self.limit = limit
        #: (size, mtime) of each file as last stored: unchanged files are not read again.
        self.stored: dict[str, tuple[int, int]] = {}
        #: The code snapshot's files (path -> sha256), and the (size, mtime, inode) of each as last
        #: found identical to it: a file still identical to its snapshot is not an output.
        self.code: dict[str, str] = {}
        self.identical: dict[str, tuple[int, int, int]] = {}
        #: Paths the supervisor placed (mounts, parameters): inputs, never outputs.
        self.placed: set[str] = {PARAMS_FILE}
        self._skipped: set[str] = set()
        self._pass = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._refused: set[str] = set()
        #: (device, inode) of the working directory when the code was placed in it: a pass never
        #: walks another directory put in its place (a symlink to /etc, say).
        self._identity: tuple[int, int] | None = None
        #: Its real path then: a file is the run's only if it is under this, wherever the
        #: directory's path leads later (the command may swap it for a symlink mid-pass).
        self._root = os.path.realpath(directory)
        self._moved = False

    def snapshot(self, files: dict[str, str]) -> None:
        """The code as materialised (path -> sha256): these files are outputs only once changed."""
        with contextlib.suppress(OSError):
            st = self.directory.stat()
            self._identity = (st.st_dev, st.st_ino)
            self._root = os.path.realpath(self.directory)
        self.code.update(files)
        for rel in files:
            with contextlib.suppress(OSError):
                self.identical[rel] = _key(self.directory / rel)

    def place(self, rel: str) -> None:
        """A path (file or directory) the supervisor placed for the run, such as a mount."""
        self.placed.add(rel.strip("/"))

    def start(self, interval: float) -> None:
        """Store what settled every ``interval`` seconds, in a background thread."""
        def loop() -> None:
            while not self._stop.wait(interval):
                self.upload(final=False)

        self._thread = threading.Thread(target=loop, name="runyard-outputs", daemon=True)
        self._thread.start()

    def finish(self) -> int:
        """After the command ended: stop the periodic passes (letting one under way end), then store
        everything that changed. Returns the number of files stored by this last pass."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return self.upload(final=True)

    def upload(self, final: bool) -> int:
        """One pass; returns the number of files stored."""
        with self._pass:
            try:
                return self._upload(final)
            except Exception as e:  # noqa: BLE001 - a pass that fails is reported; the next one tries again
                self.say(f"storing outputs failed: {type(e).__name__}: {e}")
                return 0

    def _upload(self, final: bool) -> int:
        if not self.directory.is_dir() or not self._same_directory():
            return 0
        writing = set() if final else self.writing()
        count = size = 0
        for rel, path in self._candidates():
            try:
                st = path.stat()
            except OSError:
                continue  # removed while we looked: the next pass sees the new state
            if self.stored.get(rel) == (st.st_size, st.st_mtime_ns) or not self._valid(rel):
                continue
            if not final and (time.time() - st.st_mtime < SETTLE or os.path.realpath(path) in writing):
                continue  # still being written: a later pass stores it whole
            if rel in self.code and self._unchanged(rel, path, st):
                continue
            if st.st_size > self.limit and not rel.startswith(OUTPUTS + "/"):
                if rel not in self._skipped:
                    self._skipped.add(rel)
                    self.say(f"not keeping {rel} as an output: {_size(st.st_size)} is over the limit of "
                             f"{_size(self.limit)} for files outside {OUTPUTS}/ (setting output_limit; files "
                             f"under {OUTPUTS}/ have no limit)")
                continue
            stored = self._store(path, accept_changing=final)
            if stored is None:
                continue
            sha, length, key = stored
            self.record(rel, length, sha, stat.S_IMODE(st.st_mode))
            self.stored[rel] = key
            count += 1
            size += length
        if count:
            self.say(f"uploaded {count} output file(s) ({_size(size)})" + (" (final)" if final else ""))
        return count

    def _same_directory(self) -> bool:
        """Whether the working directory is still the one the code was placed in, not a symlink or
        another directory the command put in its place (said once)."""
        try:
            st = self.directory.stat()
            same = not self.directory.is_symlink() and (
                self._identity is None or (st.st_dev, st.st_ino) == self._identity)
        except OSError:
            same = False
        if not same and not self._moved:
            self._moved = True
            self.say(f"not storing outputs: the working directory {self.directory} was replaced (by a symlink or "
                     "another directory) while the run went on; nothing outside it is stored")
        return same

    def _candidates(self) -> Iterator[tuple[str, Path]]:
        """(relative path, path) of each file a pass considers, sorted, without the directories
        never kept and, outside ``outputs/``, what ``.runyardignore`` lists. A symlink is never
        followed: its target is not the run's (``outputs -> /etc/ssl`` keeps nothing of /etc/ssl)."""
        patterns = ignore_patterns(self.directory)
        root = str(self.directory)
        for dirpath, dirnames, filenames in os.walk(root):  # followlinks=False: symlinked directories stay shut
            base = os.path.relpath(dirpath, root).replace(os.sep, "/")
            base = "" if base == "." else base + "/"
            kept = []
            for d in sorted(dirnames):
                if not self._kept(base + d, d, patterns):
                    continue
                if os.path.islink(os.path.join(dirpath, d)):  # noqa: PTH114, PTH118
                    self._skip_link(base + d)
                    continue
                kept.append(d)
            dirnames[:] = kept
            for name in sorted(filenames):
                rel = base + name
                path = Path(dirpath, name)
                if not self._kept(rel, name, patterns):
                    continue
                if path.is_symlink():
                    if rel not in self.code:  # one the run made (ln -s model-100.pt best.pt): say so
                        self._skip_link(rel, directory=False)
                    continue
                yield rel, path

    def _skip_link(self, rel: str, directory: bool = True) -> None:
        """Say once that a symlink of the working directory is not kept, nor followed."""
        if rel in self._skipped:
            return
        self._skipped.add(rel)
        try:
            where = f" (to {(self.directory / rel).readlink()})"
        except OSError:
            where = ""
        self.say(f"not keeping {rel}{'/' if directory else ''} as an output: it is a symlink{where}, and a run's "
                 "outputs are the files it wrote in its working directory; symlinks are not followed (copy the "
                 "file to keep it)")

    def _kept(self, rel: str, name: str, patterns: list[str]) -> bool:
        if name in NEVER_KEPT or any(rel == p or rel.startswith(p + "/") for p in self.placed):
            return False
        return rel == OUTPUTS or rel.startswith(OUTPUTS + "/") or not ignored(rel, patterns)

    def _unchanged(self, rel: str, path: Path, st: os.stat_result) -> bool:
        """Whether the file is still the snapshot's (its content hashed only when its stat changed)."""
        key = (st.st_size, st.st_mtime_ns, st.st_ino)
        if self.identical.get(rel) == key:
            return True
        try:
            with self._open(path) as f:
                sha, _ = _hash_file(f)
        except OSError:
            return True  # unreadable, gone or not the run's: nothing to keep now
        if sha == self.code[rel]:
            self.identical[rel] = key
            return True
        return False

    def _store(self, path: Path, accept_changing: bool) -> tuple[str, int, tuple[int, int]] | None:
        """Store the file unless the store holds its content already: (sha256, size, (size, mtime)
        as stored), or None when it changed while being read (a later pass tries again). With
        ``accept_changing`` (the last pass: nobody should write any more), a file that keeps
        changing is stored as read on the third try."""
        stored = None
        for _attempt in range(3):
            try:
                with self._open(path) as f:
                    before = os.fstat(f.fileno())
                    sha, size = _hash_file(f)
                    if not self.store.has(sha):
                        f.seek(0)
                        blob = self.store.put_stream(f)  # reads it again: it may have changed since
                        sha, size = blob.sha256, blob.size
                    after = os.fstat(f.fileno())
            except (OSError, RunyardError):
                return None  # removed, unreadable or not the run's now: the next pass sees the new state
            stored = (sha, size, (after.st_size, after.st_mtime_ns))
            if (before.st_size, before.st_mtime_ns) == stored[2]:
                return stored
            if not accept_changing:
                return None
        return stored

    def _open(self, path: Path) -> BinaryIO:
        """Open a file of the working directory for reading, refusing (OSError) a symlink, anything
        but a regular file, and a file that is not inside the working directory after all (a
        directory on its way swapped for a symlink after the pass listed it)."""
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OSError(f"{path} is not a regular file")
            try:
                real = os.readlink(f"/proc/self/fd/{fd}")  # noqa: PTH115 - the opened file's own path
            except OSError:
                real = os.path.realpath(path)  # not Linux
            if not real.startswith(self._root + os.sep):
                raise OSError(f"{path} leads out of the working directory, to {real}")
        except BaseException:
            os.close(fd)
            raise
        return os.fdopen(fd, "rb")

    def _valid(self, rel: str) -> bool:
        try:
            validate_relpath(rel)
        except RunyardError as e:
            if rel not in self._refused:
                self._refused.add(rel)
                self.say(f"not storing {rel!r}: {e}")
            return False
        return True


def _key(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns, st.st_ino


def _hash_file(f: BinaryIO) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    while block := f.read(_CHUNK):
        digest.update(block)
        size += len(block)
    return digest.hexdigest(), size


def _size(n: int) -> str:
    if n < 1024:
        return f"{n:,} bytes"
    exponent = min(4, int(math.log(n, 1024)))
    return f"{n / 1024**exponent:.1f} {('KiB', 'MiB', 'GiB', 'TiB')[exponent - 1]}"


def written_by(pid: int) -> set[str]:
    """Real paths of the files that process ``pid`` and its descendants hold open for writing
    (empty where the platform does not say how a file is open)."""
    import psutil

    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return set()
    paths: set[str] = set()
    for process in processes:
        try:
            files = process.open_files()
        except psutil.Error:
            continue  # ended meanwhile, or not ours to inspect
        paths.update(os.path.realpath(f.path) for f in files if getattr(f, "mode", "r") != "r")
    return paths
