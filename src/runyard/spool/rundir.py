"""A run's spool directory: ``$RUNYARD_HOME/spool/<run id>/``, with one set of files per writer.

Per writer: its segments (``<writer>-000000.seg`` ...), spilled batches (``spill/``), its ack file,
and a lock file it holds (flock) for as long as it lives. The lock tells an ingester whether the
writer is still running: the kernel releases it when the process dies, however it dies.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from runyard.files import lock_held

if TYPE_CHECKING:
    from runyard.config import Settings

#: A file in each run directory naming the database its records go to (see ``target_key``).
TARGET_FILE = "target"

_RUN_ID = re.compile(r"^[0-9A-Z]{26}$")
LOCK_SUFFIX = ".lock"
#: Where a finished run's spool directory goes once the store holds it all (spool/retired/<id>):
#: kept, since the spool is the durable record, but out of the way of every ingest pass.
RETIRED = "retired"


def run_dir(spool_dir: Path, run_id: str) -> Path:
    if not _RUN_ID.match(run_id):
        raise ValueError(f"not a run id: {run_id!r}")
    return spool_dir / run_id


def retired_dir(directory: Path) -> Path:
    """Where ``directory`` (spool/<run id>) is once retired."""
    return directory.parent / RETIRED / directory.name


def lock_writer(directory: Path, writer: str) -> int:
    """Take the writer's lock; returns the descriptor to keep open for the writer's lifetime."""
    fd = os.open(directory / f"{writer}{LOCK_SUFFIX}", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


def writer_alive(directory: Path, writer: str) -> bool:
    """Whether a process still holds the writer's lock."""
    return lock_held(directory / f"{writer}{LOCK_SUFFIX}")


def run_dirs(spool_dir: Path) -> list[Path]:
    try:
        return sorted(Path(e.path) for e in os.scandir(spool_dir) if e.is_dir() and _RUN_ID.match(e.name))
    except FileNotFoundError:
        return []


def target_key(settings: Settings) -> str:
    """Names where a spool goes (a database and artifact store, or a server): one agent per target."""
    if settings.server:
        return target_key_of(f"server {settings.server}", "")
    return target_key_of(settings.db, str(settings.artifacts))


def target_key_of(db: str, artifacts: str) -> str:
    return hashlib.sha256(f"{db}\0{artifacts}".encode()).hexdigest()[:16]


def target_of(directory: Path) -> str | None:
    try:
        return (directory / TARGET_FILE).read_text().strip()
    except FileNotFoundError:
        return None


def waiting_for_catch_up(spool_dir: Path, target: str | None) -> bool:
    """Whether a writer that is gone left records not yet in the store (what a command opening the
    home ingests first): cheap, standard library only, so that a fast command can ask. Finished
    runs' spools are retired (spool/retired/): with no run directory left, the acks and segments
    are not looked at, nor their readers imported."""
    directories = run_dirs(spool_dir)
    if not directories:
        return False
    from runyard.spool.acks import read_ack
    from runyard.spool.segment import segments_of

    for directory in directories:
        if target is not None and target_of(directory) not in (target, None):
            continue
        for writer in segments_of(directory):
            if not read_ack(directory, writer).complete and not writer_alive(directory, writer):
                return True
    return False
