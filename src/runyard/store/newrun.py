"""``NewRun``: what a caller knows when it creates a run. Alone in its module because the fast path
(``store/lite.py``, behind ``runyard run``) needs it and nothing else of ``api.py``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from runyard.types import RunKind, RunStatus


@dataclass(frozen=True)
class NewRun:
    """What a caller knows when it creates a run. The store assigns the number."""

    project: str
    status: RunStatus = RunStatus.RUNNING
    #: A ULID made by the caller (a run created offline keeps its id); made by the store if None.
    id: str | None = None
    name: str | None = None
    command: list[str] | None = None
    config: Mapping[str, Any] = field(default_factory=dict)
    labels: Sequence[str] = ()
    notes: str = ""
    resources: Mapping[str, Any] = field(default_factory=dict)
    priority: int = 0
    executor: str | None = None
    #: What it executes (a command, a notebook): decides the command a submission builds.
    kind: RunKind = RunKind.SCRIPT
    host: str | None = None
    parent: int | None = None
    snapshot_id: str | None = None
    git_commit: str | None = None
    git_branch: str | None = None
    git_diff_ref: str | None = None
    environment: Mapping[str, Any] = field(default_factory=dict)
    #: How `runyard run` launched it: {"shell": bool, "env": {...}, "pip": [...], "mounts": [...], ...}.
    launch: Mapping[str, Any] | None = None
    #: Creation time; the store's clock if None.
    created_at: float | None = None
