"""Ingest acknowledgements: how far the store has taken in each writer's records.

One small file per writer in the run's spool directory, replaced atomically (write, fsync,
rename). The ingester writes it; the writer's ``finish()`` reads it to wait until its last record
is in the store; anyone can read it to tell which spools still have work. It is the only state the
two sides share; losing it costs a re-read, never data (ingest is idempotent by sequence number).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

SUFFIX = ".ack"


@dataclass(frozen=True)
class Ack:
    #: Highest sequence number applied to the store (-1: none yet).
    seq: int = -1
    #: Segment index and byte offset where reading resumes.
    segment: int = 0
    offset: int = 0
    #: The writer is gone and everything readable has been applied.
    complete: bool = False
    #: Bytes of torn or corrupt tail dropped when the writer was found dead.
    dropped_bytes: int = 0
    #: The run's number in the store, once known.
    run_number: int | None = None
    #: The writer recorded how it ended (an end or detach event): if it dies, nothing is lost.
    ended: bool = False
    #: The writer owns the run's life (an SDK run, not one attached to a `runyard run` launch).
    owner: bool = True

    @property
    def position(self) -> int:
        """Where reading resumes, as an address (spool/segment.py): everything before it is applied."""
        return (self.segment << 32) | self.offset


def ack_path(run_dir: Path, writer: str) -> Path:
    return run_dir / f"{writer}{SUFFIX}"


def read_ack(run_dir: Path, writer: str) -> Ack:
    """The writer's ack, in its run directory or, once the run is retired, in spool/retired/."""
    from runyard.spool.rundir import retired_dir

    for directory in (run_dir, retired_dir(run_dir)):
        try:
            data = json.loads(ack_path(directory, writer).read_text())
            return Ack(**data)
        except FileNotFoundError:
            continue
        except (ValueError, TypeError):
            return Ack()
    return Ack()


def write_ack(run_dir: Path, writer: str, ack: Ack) -> None:
    path = ack_path(run_dir, writer)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    with tmp.open("w") as f:
        json.dump(asdict(ack), f)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
