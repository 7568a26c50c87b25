"""Starting the local agent, the process that ingests spools into the store (one per database).

The SDK never imports the store: it only starts ``python -m runyard.agent`` when none is running
for its database, detached in its own session, and tells it where the home and database are. A
second agent started by a race exits at once (the agent holds a lock for its lifetime).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from runyard.files import lock_held
from runyard.spool.rundir import target_key

if TYPE_CHECKING:
    from runyard.config import Settings

#: Variables that give the libraries numpy may use for linear algebra one thread each.
SINGLE_THREADED = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def agent_dir(settings: Settings) -> Path:
    return settings.home / "agents"


def agent_lock_path(settings: Settings) -> Path:
    return agent_dir(settings) / f"{target_key(settings)}.lock"


def agent_running(settings: Settings) -> bool:
    return lock_held(agent_lock_path(settings))


def ensure_agent(settings: Settings) -> None:
    """Start the agent for these settings' database unless one is running."""
    if agent_running(settings):
        return
    directory = agent_dir(settings)
    directory.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update({"RUNYARD_HOME": str(settings.home), "RUNYARD_DB": settings.db,
                "RUNYARD_ARTIFACTS": settings.artifacts, "RUNYARD_S3_ENDPOINT": settings.s3_endpoint or "",
                "RUNYARD_SERVER": settings.server or ""})
    if settings.token:
        env["RUNYARD_TOKEN"] = settings.token
    env.pop("RUNYARD_RUN_ID", None)
    # Its numpy work is small: a pool of BLAS threads would only spin beside the training's cores.
    env.update(dict.fromkeys(SINGLE_THREADED, "1"))
    log = (directory / f"{target_key(settings)}.log").open("ab")
    try:
        subprocess.Popen(
            [sys.executable, "-m", "runyard.agent"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, cwd=str(settings.home),
            start_new_session=True, close_fds=True,
        )
    finally:
        log.close()


def stop_agents(home: Path, timeout: float = 10.0) -> None:
    """End every agent serving ``home`` (SIGTERM) and wait for their locks to be released.

    Their work is safe to interrupt: a spool is re-read from its acknowledged offsets, a queued
    run stays queued. Benchmarks use it before removing a throwaway home.
    """
    agents = home / "agents"
    for lock in sorted(agents.glob("*.lock")) if agents.is_dir() else []:
        try:
            pid = int(lock.read_text().strip())
        except ValueError:
            continue  # held by something that is not an agent (it writes no pid): leave it alone
        if pid <= 1:
            continue  # never kill(0) or kill(1): that would signal a whole process group, or init
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        deadline = time.monotonic() + timeout
        while lock_held(lock) and time.monotonic() < deadline:
            time.sleep(0.05)
