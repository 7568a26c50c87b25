"""Where a tailer delivers spool records: this machine's store, or a server (see shipper.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from runyard.ingest.alerting import Watcher
from runyard.ingest.apply import apply_records
from runyard.store.api import Store
from runyard.store.artifacts import ArtifactStore


class Sink(Protocol):
    def cursor(self, run_id: str, writer: str) -> int:
        """Highest sequence number of this writer already applied (-1: none)."""
        ...

    def apply(self, run_dir: Path, run_id: str, writer: str, recs: list[Any], cursor: int) -> tuple[int | None, int]:
        """Apply records past ``cursor``; returns the run's number (None if nothing was applied) and
        the new cursor."""
        ...

    def mark_lost(self, run_id: str, message: str) -> bool: ...

    def heartbeat(self, run_id: str) -> float | None: ...

    def make_durable(self) -> None:
        """Make what was applied survive a power cut (before a spool is retired)."""
        ...


class StoreBacked:
    """What both sinks answer from a store, local or remote (``RemoteStore`` has the same calls)."""

    store: Any

    def cursor(self, run_id: str, writer: str) -> int:
        return int(self.store.ingest_cursor(run_id, writer))

    def mark_lost(self, run_id: str, message: str) -> bool:
        return bool(self.store.mark_lost(run_id, message))

    def heartbeat(self, run_id: str) -> float | None:
        try:
            heartbeat: float | None = self.store.get_run(run_id).heartbeat_at
        except Exception:  # noqa: BLE001 - only for a message
            return None
        return heartbeat

    def make_durable(self) -> None:
        """A server acknowledges what it committed; nothing to do here (StoreSink overrides)."""


class StoreSink(StoreBacked):
    """Local mode: records go straight into the store (SQLite's single writer is the agent)."""

    def __init__(self, store: Store, artifacts: ArtifactStore, watcher: Watcher | None = None) -> None:
        self.store = store
        self.artifacts = artifacts
        #: Evaluates alert rules on what is applied: every ingester does, whoever applies a batch.
        self.watcher = watcher if watcher is not None else Watcher(store)

    def apply(self, run_dir: Path, run_id: str, writer: str, recs: list[Any], cursor: int) -> tuple[int | None, int]:
        result, cursor = apply_records(self.store, self.artifacts, run_dir, run_id, writer, recs, cursor,
                                       self.watcher)
        return (result.run_number if result is not None else None), cursor

    def make_durable(self) -> None:
        from runyard.store.engine import make_durable

        make_durable(self.store.engine)

    def mark_lost(self, run_id: str, message: str) -> bool:
        changed = bool(self.store.mark_lost(run_id, message))
        if changed and self.watcher is not None:
            self.watcher.after_status(self.store.get_run(run_id).number, "lost", message)
        return changed
