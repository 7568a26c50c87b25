"""Two file-system primitives used across layers: durable directory entries, and lock probing."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


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
