"""Launching through a server: the server's side of ``POST /api/v1/runs``.

The client snapshots its working tree into its own artifact cache, uploads the content the server
lacks, and sends the launch options. The server checks that the snapshot is complete, and queues the
run exactly as a local ``runyard run`` would, on its own machine, with its own Python. Only artifact
mounts (``RUN:PATH``) are accepted: a client never names a path on the server.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from runyard.errors import Conflict, InvalidArgument
from runyard.exec import options
from runyard.store.artifacts import ArtifactStore, sha_of_ref

if TYPE_CHECKING:
    from runyard.config import Settings
    from runyard.exec.submit import Submission, Submitted

_ARTIFACT_SOURCE = re.compile(r"^[A-Za-z0-9_.-]+:")


def missing_content(artifacts: ArtifactStore, snapshot: str, diff_ref: str | None) -> list[str]:
    """SHA-256s a snapshot needs that the store lacks (its manifest first)."""
    from runyard.exec.snapshot import manifest_of

    refs = [snapshot] + ([diff_ref] if diff_ref else [])
    missing = [sha_of_ref(ref) for ref in refs if not artifacts.exists(ref)]
    if sha_of_ref(snapshot) in missing:
        return missing
    try:
        files = manifest_of(snapshot, artifacts)
    except (ValueError, KeyError, TypeError) as e:
        raise InvalidArgument(f"snapshot {snapshot[:19]}... is not a snapshot manifest ({e})") from None
    needed = {sha for sha, _ in files.values()}
    return missing + sorted(needed - artifacts.has_many(needed))


def artifact_mounts_only(mounts: Sequence[str]) -> None:
    """Refuse a mount of a path: a client never names a file of the server's."""
    for text in mounts:
        source, _ = options.mount(text)
        if not _ARTIFACT_SOURCE.match(source):
            raise InvalidArgument(f"--mount {text!r}: through a server only artifacts of runs can be mounted "
                                  "(RUN:PATH); log the data as an artifact first")


def queue(settings: Settings, artifacts: ArtifactStore, sub: Submission, requirements: str | None) -> Submitted:
    """Queue ``sub`` (whose ``snapshot`` names uploaded content; its ``cwd`` is not used) with the
    text of its requirements file, after checking what a client may ask of the server."""
    from runyard.exec.submit import submit

    if sub.snapshot is None:
        raise InvalidArgument("a launch through a server names an uploaded snapshot")
    snapshot, _, _, diff_ref = sub.snapshot
    sha_of_ref(snapshot)
    for key, value in sub.env.items():
        options.key_value(f"{key}={value}", "--env")
    for key, value in sub.params.items():
        options.key_value(f"{key}={value}", "--param")
    # Requirement names and versions only: an include (-r), a URL or a path would have the
    # installer read the server's files or fetch what the client names.
    options.requirement_lines(requirements or "", "--requirements", urls=False)
    for spec in sub.pip:
        options.pip_spec(spec)
    artifact_mounts_only(sub.mounts)
    missing = missing_content(artifacts, snapshot, diff_ref)
    if missing:
        raise Conflict("the snapshot is incomplete; upload these blobs first: " + ",".join(missing[:50]))
    with tempfile.TemporaryDirectory(prefix="runyard-launch-") as tmp:
        # An empty working directory: nothing a client names can resolve to a file of the server's.
        cwd = Path(tmp)
        requirements_file = None
        if requirements is not None:
            requirements_file = cwd / "requirements.txt"
            requirements_file.write_text(requirements)
        return submit(settings, replace(sub, cwd=cwd, requirements=requirements_file))
