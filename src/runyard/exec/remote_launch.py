"""Launching through a server: the server's side of ``POST /api/v1/runs``.

The client snapshots its working tree into its own artifact cache, uploads the content the server
lacks, and sends the launch options. The server checks that the snapshot is complete, and queues the
run exactly as a local ``runyard run`` would, on its own machine, with its own Python. Only artifact
mounts (``RUN:PATH``) are accepted: a client never names a path on the server.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from runyard.errors import Conflict, InvalidArgument
from runyard.exec import options
from runyard.store.artifacts import DiskArtifacts, sha_of_ref

if TYPE_CHECKING:
    from runyard.config import Settings
    from runyard.exec.submit import Submitted

_ARTIFACT_SOURCE = re.compile(r"^[A-Za-z0-9_.-]+:")


@dataclass
class RemoteLaunch:
    command: list[str]
    shell: bool
    snapshot: str
    git_commit: str | None = None
    git_branch: str | None = None
    git_diff_ref: str | None = None
    project: str | None = None
    name: str | None = None
    labels: list[str] = field(default_factory=list)
    note: str = ""
    params: dict[str, str] = field(default_factory=dict)
    pip: list[str] = field(default_factory=list)
    requirements: str | None = None
    mounts: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    gpus: int | None = None
    cpus: int | None = None
    memory: str | None = None
    timeout: str | None = None
    priority: int = 0
    machine: str | None = None


def missing_content(artifacts: DiskArtifacts, launch: RemoteLaunch) -> list[str]:
    """SHA-256s the snapshot needs that the store lacks (its manifest first)."""
    from runyard.exec.snapshot import manifest_of

    refs = [launch.snapshot] + ([launch.git_diff_ref] if launch.git_diff_ref else [])
    missing = [sha_of_ref(ref) for ref in refs if not artifacts.exists(ref)]
    if sha_of_ref(launch.snapshot) in missing:
        return missing
    try:
        files = manifest_of(launch.snapshot, artifacts)
    except (ValueError, KeyError, TypeError) as e:
        raise InvalidArgument(f"snapshot {launch.snapshot[:19]}... is not a snapshot manifest ({e})") from None
    return missing + sorted({sha for sha, _ in files.values() if not artifacts.has(sha)})


def queue(settings: Settings, artifacts: DiskArtifacts, launch: RemoteLaunch) -> Submitted:
    from runyard.exec.submit import Submission, submit

    sha_of_ref(launch.snapshot)
    for key, value in launch.env.items():
        options.key_value(f"{key}={value}", "--env")
    for key, value in launch.params.items():
        options.key_value(f"{key}={value}", "--param")
    if launch.requirements is not None:
        for line in launch.requirements.splitlines():
            entry = line.split("#", 1)[0].strip()
            # Requirement names and versions only: an include (-r), a URL or a path would have the
            # installer read the server's files or fetch what the client names.
            if entry and not options.REQUIREMENT.match(entry):
                raise InvalidArgument(f"--requirements line {entry[:100]!r}: through a server only requirements "
                                      "such as 'torch>=2.1' are accepted (no options, URLs or paths)")
    for text in launch.mounts:
        source, _ = options.mount(text)
        if not _ARTIFACT_SOURCE.match(source):
            raise InvalidArgument(f"--mount {text!r}: through a server only artifacts of runs can be mounted "
                                  "(RUN:PATH); log the data as an artifact first")
    missing = missing_content(artifacts, launch)
    if missing:
        raise Conflict("the snapshot is incomplete; upload these blobs first: " + ",".join(missing[:50]))
    with tempfile.TemporaryDirectory(prefix="runyard-launch-") as tmp:
        # An empty working directory: nothing a client names can resolve to a file of the server's.
        cwd = Path(tmp)
        requirements = None
        if launch.requirements is not None:
            requirements = cwd / "requirements.txt"
            requirements.write_text(launch.requirements)
        sub = Submission(
            command=launch.command, shell=launch.shell, cwd=cwd, project=launch.project, name=launch.name,
            labels=launch.labels, note=launch.note, params=launch.params, pip=launch.pip,
            requirements=requirements, mounts=launch.mounts, env=launch.env, gpus=launch.gpus, cpus=launch.cpus,
            memory=launch.memory, timeout=launch.timeout, priority=launch.priority, machine=launch.machine,
            snapshot=(launch.snapshot, launch.git_commit, launch.git_branch, launch.git_diff_ref),
        )
        return submit(settings, sub)
