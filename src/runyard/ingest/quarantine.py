"""Records an ingester cannot apply, set aside with the reason instead of stopping everything.

One bad record (a spool written by another version, a bug, a flipped bit that still passed its
checksum) must not stop the ingest of its run, of other runs, or the commands that catch up on the
spool. The ingester moves it here and goes on; ``runyard sync`` and ``runyard doctor`` show what
is here. A file per writer, at the top of the spool (run directories are retired; this is not)::

    $RUNYARD_HOME/spool/quarantine/<run id>.<writer>.jsonl

One JSON line per record: its sequence number, when, why, and the record itself (as JSON where it
can be, else its repr), so that a person can see what was refused and a fix can replay it.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DIR = "quarantine"


@dataclass(frozen=True)
class Quarantined:
    run_id: str
    writer: str
    seq: int
    time: float
    reason: str
    record: Any


def put(spool_dir: Path, run_id: str, writer: str, seq: int, reason: str, record: Any) -> None:
    directory = spool_dir / DIR
    directory.mkdir(parents=True, exist_ok=True)
    try:
        shown: Any = json.loads(json.dumps(record, default=repr))
    except (TypeError, ValueError):
        shown = repr(record)
    line = json.dumps({"seq": seq, "time": time.time(), "reason": reason, "record": shown}) + "\n"
    with (directory / f"{run_id}.{writer}.jsonl").open("a") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def listing(spool_dir: Path) -> list[Quarantined]:
    """Everything set aside in this spool, oldest first."""
    out: list[Quarantined] = []
    directory = spool_dir / DIR
    for path in sorted(directory.glob("*.jsonl")) if directory.is_dir() else []:
        run_id, _, writer = path.stem.partition(".")
        for line in path.read_text().splitlines():
            try:
                item = json.loads(line)
            except ValueError:
                continue  # a line cut by a crash
            out.append(Quarantined(run_id, writer, int(item["seq"]), float(item["time"]), str(item["reason"]),
                                   item.get("record")))
    out.sort(key=lambda q: q.time)
    return out


def quarantinable(error: BaseException) -> bool:
    """Whether ``error`` says "this record cannot be applied" (set it aside) rather than "the store
    cannot be reached now" (keep it, try again later). Unknown errors are neither: they are reported
    with their writer and the records stay in the spool."""
    from runyard.errors import RunyardError

    if isinstance(error, RunyardError):
        return isinstance(error, ValueError)  # InvalidArgument, ArtifactPathError: about the record
    if isinstance(error, ValueError | TypeError | KeyError | IndexError | AttributeError | OverflowError):
        return True
    try:
        import sqlalchemy.exc as sa_exc
    except ImportError:
        return False
    if isinstance(error, sa_exc.OperationalError | sa_exc.InterfaceError | sa_exc.TimeoutError):
        return False  # a locked or unreachable database, a full disk: transient
    return isinstance(error, sa_exc.IntegrityError | sa_exc.DataError | sa_exc.StatementError)
