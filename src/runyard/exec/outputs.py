"""Keeping a launched run's ``outputs/``: stored while the run goes on, from a thread of its own.

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

import hashlib
import math
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from runyard.errors import RunyardError
from runyard.names import validate_relpath
from runyard.store.artifacts import ArtifactStore

OUTPUTS = "outputs"
#: Seconds a file must stay unchanged before a pass stores it while the command runs.
SETTLE = 1.0
_CHUNK = 1 << 20


class Outputs:
    """The uploads of one run's ``outputs/`` directory.

    ``record(path, size, sha256)`` queues an artifact record for stored content; ``say`` writes a
    line to the run's log; ``writing()`` names the files the run's processes hold open for writing.
    """

    def __init__(self, directory: Path, store: ArtifactStore, record: Callable[[str, int, str], None],
                 say: Callable[[str], None], writing: Callable[[], set[str]] = set) -> None:
        self.directory = directory
        self.store = store
        self.record = record
        self.say = say
        self.writing = writing
        #: (size, mtime) of each file as last stored: unchanged files are not read again.
        self.stored: dict[str, tuple[int, int]] = {}
        self._pass = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._refused: set[str] = set()

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
                self.say(f"storing outputs/ failed: {type(e).__name__}: {e}")
                return 0

    def _upload(self, final: bool) -> int:
        if not self.directory.is_dir():
            return 0
        writing = set() if final else self.writing()
        count = size = 0
        for path in sorted(self.directory.rglob("*")):
            if not path.is_file() or path.is_symlink():
                continue
            rel = f"{OUTPUTS}/{path.relative_to(self.directory).as_posix()}"
            try:
                st = path.stat()
            except OSError:
                continue  # removed while we looked: the next pass sees the new state
            if self.stored.get(rel) == (st.st_size, st.st_mtime_ns) or not self._valid(rel):
                continue
            if not final and (time.time() - st.st_mtime < SETTLE or os.path.realpath(path) in writing):
                continue  # still being written: a later pass stores it whole
            stored = self._store(path, accept_changing=final)
            if stored is None:
                continue
            sha, length, key = stored
            self.record(rel, length, sha)
            self.stored[rel] = key
            count += 1
            size += length
        if count:
            self.say(f"uploaded {count} file(s) from outputs/ ({_size(size)})" + (" (final)" if final else ""))
        return count

    def _store(self, path: Path, accept_changing: bool) -> tuple[str, int, tuple[int, int]] | None:
        """Store the file unless the store holds its content already: (sha256, size, (size, mtime)
        as stored), or None when it changed while being read (a later pass tries again). With
        ``accept_changing`` (the last pass: nobody should write any more), a file that keeps
        changing is stored as read on the third try."""
        stored = None
        for _attempt in range(3):
            try:
                before = path.stat()
                sha, size = _hash(path)
                if not self.store.has(sha):
                    blob = self.store.put_file(path)  # reads it again: it may have changed since
                    sha, size = blob.sha256, blob.size
                after = path.stat()
            except (OSError, RunyardError):
                return None  # removed or unreadable now: the next pass sees the new state
            stored = (sha, size, (after.st_size, after.st_mtime_ns))
            if (before.st_size, before.st_mtime_ns) == stored[2]:
                return stored
            if not accept_changing:
                return None
        return stored

    def _valid(self, rel: str) -> bool:
        try:
            validate_relpath(rel)
        except RunyardError as e:
            if rel not in self._refused:
                self._refused.add(rel)
                self.say(f"not storing {rel!r}: {e}")
            return False
        return True


def _hash(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
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
