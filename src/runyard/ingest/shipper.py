"""Remote mode: spool records shipped to a runyard server, with retry.

The tailer reads the spool exactly as in local mode and hands records to ``RemoteSink``: content
the records name (staged artifact files) is uploaded first, then the records, compressed, to
``POST /api/v1/ingest``. The server applies what lies past its cursor for (run, writer) and answers
with that cursor, so a batch re-sent after a timeout changes nothing. When a call fails, ``Backoff``
says how long the agent waits before trying again: exponential, with full jitter, capped.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runyard.client import Client, RemoteStore
from runyard.ingest import columns
from runyard.ingest.sink import StoreBacked
from runyard.spool import records

#: Records per request: about 1-3 MB compressed for metrics.
SHIP_CHUNK = 20_000


class RemoteSink(StoreBacked):
    def __init__(self, client: Client) -> None:
        self.client = client
        self.store = RemoteStore(client)

    def apply(self, run_dir: Path, run_id: str, writer: str, recs: list[Any], cursor: int) -> tuple[int | None, int]:
        # The server's ingest route takes records; runs decoded as columns go as the maps they were.
        fresh = columns.to_records(columns.after(recs, cursor))
        number = None
        for start in range(0, len(fresh), SHIP_CHUNK):
            chunk = fresh[start : start + SHIP_CHUNK]
            self._upload_staged(run_dir, chunk)
            number, cursor = self.client.ingest(run_id, writer, chunk)
        self._forget_staged(run_dir, fresh)
        return number, cursor

    def _upload_staged(self, run_dir: Path, recs: list[Any]) -> None:
        for rec in recs:
            if type(rec) is not dict and rec[1] == records.ARTIFACT:
                staged = run_dir / "files" / str(rec[5])
                if staged.is_file():
                    self.client.put_blob(str(rec[5]), staged)

    def _forget_staged(self, run_dir: Path, recs: list[Any]) -> None:
        for rec in recs:
            if type(rec) is not dict and rec[1] == records.ARTIFACT:
                (run_dir / "files" / str(rec[5])).unlink(missing_ok=True)


@dataclass
class Backoff:
    """Delays between retries: full jitter over an exponentially growing cap."""

    base: float = 0.2
    cap: float = 30.0
    failures: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def failed(self, at_least: float = 0.0) -> float:
        """Record a failure; returns the seconds to wait before the next attempt: never less than
        ``at_least`` (what a busy server asked for with ``Retry-After``), up to ``cap``."""
        self.failures += 1
        jitter = self.rng.uniform(0, min(self.cap, self.base * 2 ** min(self.failures, 20)))
        return max(min(at_least, self.cap), jitter)

    def succeeded(self) -> None:
        self.failures = 0
