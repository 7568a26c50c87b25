"""What it takes to start a run, and the seam between the scheduler and where runs execute.

A ``LaunchSpec`` is everything a supervisor needs, written as one JSON file: the supervisor reads
nothing else (no database, no network), so a Ray executor only changes where the supervisor
starts, not what it does.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol


@dataclass(frozen=True)
class Mount:
    #: "path" (a local file or directory) or "artifact" (files of another run).
    kind: str
    target: str
    #: For a path: the absolute source path. For an artifact: the source run's number and path.
    source: str
    run: int | None = None
    #: For an artifact: (path inside the source run, sha256) of each file.
    files: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class LaunchSpec:
    run_id: str
    number: int
    argv: list[str]
    shell: bool
    snapshot_id: str
    home: str
    db: str
    artifacts: str
    #: The S3-compatible server of an s3:// ``artifacts`` (setting s3_endpoint); None: AWS, or a directory.
    s3_endpoint: str | None = None
    #: ``--env``: set over ``environment``.
    env: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    #: What the run inherits from the shell that submitted it (``runyard.exec.environment``);
    #: None for a run queued by a runyard that did not record it.
    environment: dict[str, str] | None = None
    pip: list[str] = field(default_factory=list)
    requirements: str | None = None
    #: Site-packages of the environment that submitted the run: a --pip environment layers over it.
    site_packages: list[str] = field(default_factory=list)
    python: str = ""
    mounts: list[Mount] = field(default_factory=list)
    timeout: float | None = None
    gpus: list[int] = field(default_factory=list)
    #: CPU cores and bytes of memory the run asked for (an executor of a cluster reserves them).
    cpus: int = 0
    memory: int = 0
    fsync: str = "interval"
    system_interval: float = 5.0
    outputs_interval: float = 120.0
    #: Bytes: files outside outputs/ bigger than this are not kept (setting output_limit).
    output_limit: int = 1 << 30
    #: Snapshot files of 1 MiB or more: "link" (read-only hard links where no reflink) or "copy".
    big_code_files: str = "copy"
    grace: float = 10.0
    #: The executor that started the supervisor (``runyard.exec.executors``), recorded with the run.
    executor: str = "local"
    #: Set for a supervisor on a machine without the home (a Ray node, ``runyard.exec.node``): the
    #: runyard server its records ship to, and that its code and outputs go through. Its command
    #: then keeps the GPUs the executor gave the process (CUDA_VISIBLE_DEVICES) instead of ``gpus``.
    server: str = ""
    #: What the run executes (``runyard.types.RunKind`` value): a notebook run's command is the
    #: notebook executor, whose outcome the supervisor reads (``runyard.notebook.execute``).
    kind: str = "script"

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> LaunchSpec:
        data: dict[str, Any] = json.loads(text)
        data["mounts"] = [Mount(**{**m, "files": [tuple(f) for f in m.get("files", [])]})
                          for m in data.get("mounts", [])]
        return cls(**data)


def run_directory(home: Path, run_id: str) -> Path:
    """Where a local run executes and keeps its supervisor's files."""
    return home / "runs" / run_id


class Executor(Protocol):
    """Starts supervisors somewhere, and stops them. ``name`` is the ``executor`` of the runs it
    starts (``runyard run --on NAME``)."""

    name: str

    def submit(self, spec: LaunchSpec) -> None: ...
    def stop(self, run_id: str) -> bool: ...
    def alive(self, run_id: str) -> bool: ...
    def submitted(self, run_id: str) -> bool: ...
    def ended(self, run_id: str) -> str | None:
        """Why the run's supervisor is known to have ended (None: running, or not known here)."""

    def forget(self, store: Any) -> None:
        """Let go of what the executor made for runs that ended (credentials, ...)."""
