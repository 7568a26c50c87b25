"""File-system primitives used across layers: durable directory entries, lock probing, and where a
copied-out file may be written."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from runyard.errors import ArtifactPathError
from runyard.names import validate_relpath


def fsync_dir(directory: Path) -> None:
    """Make a rename or a new file in ``directory`` survive a power cut."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def lock_held(path: Path) -> bool:
    """Whether some process holds an exclusive flock on ``path`` (False if the file is absent).

    flock locks die with their process, however it dies: this is how runyard tells whether a
    writer or an agent is alive, without pid files that outlive their process.
    """
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def place(dest_root: Path, relpath: str) -> Path:
    """Where to write a file copied out of runyard (an exported or downloaded artifact):
    ``dest_root/relpath``, its parents created, checked never to lead out of ``dest_root``.

    ``dest_root`` itself may be a symlink (the user named it), but nothing inside it is followed: a
    directory on the way that is a symlink, or a target that is one, is refused with
    ``ArtifactPathError``, so a link planted in a shared destination cannot redirect the write.
    """
    validate_relpath(relpath)
    root = Path(dest_root)
    root.mkdir(parents=True, exist_ok=True)
    real_root = root.resolve()
    parent = root
    for part in relpath.split("/")[:-1]:
        parent = parent / part
        if parent.is_symlink():
            raise ArtifactPathError(f"{parent} is a symlink; refusing to write through it (remove it, or copy "
                                    "to another destination)")
        parent.mkdir(exist_ok=True)
    target = parent / relpath.rsplit("/", 1)[-1]
    real_parent = target.parent.resolve()
    if not (real_parent == real_root or real_parent.is_relative_to(real_root)):
        raise ArtifactPathError(f"{relpath!r} would be written outside {real_root}")
    if target.is_symlink():
        raise ArtifactPathError(f"{target} is a symlink; refusing to overwrite it (remove it, or copy to "
                                "another destination)")
    return target
