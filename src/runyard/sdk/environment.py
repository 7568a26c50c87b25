"""What a teammate needs to reproduce a run: command line, Python, packages, git state, host.

Collected in a background thread (listing packages and asking git take tens to hundreds of
milliseconds), then sent as one "environment" event; the uncommitted diff becomes an artifact.
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

GIT_TIMEOUT = 10.0
MAX_DIFF = 20 * 1024 * 1024


def basics() -> dict[str, Any]:
    """Cheap facts, known at once; credentials in the command line masked (``runyard.redact``)."""
    from runyard import redact

    return {
        "argv": redact.argv(sys.argv),
        "python": platform.python_version(),
        "executable": sys.executable,
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "cwd": str(Path.cwd()),
    }


def _git(cwd: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, timeout=GIT_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.decode("utf-8", "replace") if out.returncode == 0 else None


def git_state(cwd: Path) -> tuple[dict[str, Any], bytes | None]:
    """Commit, branch and remote of the repository holding ``cwd``, and its uncommitted diff."""
    commit = _git(cwd, "rev-parse", "HEAD")
    if commit is None:
        return {}, None
    branch = (_git(cwd, "rev-parse", "--abbrev-ref", "HEAD") or "").strip()
    remote = (_git(cwd, "config", "--get", "remote.origin.url") or "").strip()
    diff = _git(cwd, "diff", "HEAD", "--binary")
    info: dict[str, Any] = {"git_commit": commit.strip(), "git_branch": branch or None}
    if remote:
        from runyard import redact

        info["git_remote"] = redact.url(remote)  # https://user:TOKEN@host/...: never recorded
    data = diff.encode() if diff else None
    if data and len(data) > MAX_DIFF:
        info["git_diff_truncated"] = len(data)
        data = data[:MAX_DIFF]
    return info, data


def collect_in_subprocess(cwd: Path, timeout: float = 30.0) -> tuple[dict[str, Any], bytes | None]:
    """Git state and packages, gathered by a child interpreter of this one.

    Listing packages walks hundreds of metadata files: done in this process it would hold the GIL
    for a good part of a second and make ``log()`` wait. A child with the same ``sys.path`` sees
    the same packages; this process only waits on a pipe, which releases the GIL.
    """
    import json

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    out = subprocess.run([sys.executable, "-m", "runyard.sdk.environment"], cwd=cwd, env=env,
                         capture_output=True, timeout=timeout, check=True)
    data = json.loads(out.stdout)
    diff = data.pop("diff", None)
    return data, diff.encode("utf-8", "surrogateescape") if diff is not None else None


def packages() -> list[str]:
    from importlib import metadata

    found = set()
    for dist in metadata.distributions():
        name = dist.metadata["Name"] if dist.metadata else None
        if name:
            found.add(f"{name}=={dist.version}")
    return sorted(found, key=str.lower)


def _main() -> None:
    import json

    info, diff = git_state(Path.cwd())
    print(json.dumps({**info, "packages": packages(),
                      "diff": diff.decode("utf-8", "surrogateescape") if diff is not None else None}))


if __name__ == "__main__":
    _main()
