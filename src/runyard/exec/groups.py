"""The process groups a launched run starts, recorded so that nothing of the run outlives it.

The supervisor starts the package installer and then the command each in a process group of its
own, with the parent-death signal, and appends each group's id to ``RUN_DIR/groups``. The
parent-death signal reaches only the direct child: the command's own children are re-parented to
init and would keep running, holding GPUs and writing in the run's directory, after the run was
marked lost and its slot given to another. So whoever finds the supervisor dead (the ingest pass
that marks the run lost) calls ``end_abandoned``, which kills each recorded group that still
belongs to the run: one of its processes has the run's ``RUNYARD_RUN_ID`` in its environment or
works inside the run's directory. A group id that was recycled by an unrelated process is never
killed.

``run_step`` runs a preparation step (the installer) so that a stop request ends it at once.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

GROUPS_FILE = "groups"
RUN_ID_VARIABLE = "RUNYARD_RUN_ID"


class Stopped(Exception):
    """A stop request ended a preparation step before it finished."""


def pdeathsig_prefix() -> list[str]:
    """A command prefix that kills the program when the process that started it dies (Linux)."""
    setpriv = shutil.which("setpriv")
    if setpriv and sys.platform.startswith("linux"):
        return [setpriv, "--pdeathsig", "KILL", "--"]
    return []


def record(directory: Path, pgid: int) -> None:
    """Note a process group the run started (one line per group, appended)."""
    with (directory / GROUPS_FILE).open("a") as f:
        f.write(f"{pgid}\n")


def recorded(directory: Path) -> list[int]:
    try:
        text = (directory / GROUPS_FILE).read_text()
    except OSError:
        return []
    return [int(line) for line in text.split() if line.isdigit()]


def end_abandoned(directory: Path, run_id: str, wait: float = 2.0) -> list[int]:
    """Kill (SIGKILL) the recorded process groups of a run whose supervisor is dead, when they still
    belong to it; returns the ids of the groups killed. Waits up to ``wait`` seconds for them to end."""
    killed = []
    for pgid in recorded(directory):
        if pgid <= 1 or pgid == os.getpgrp():
            continue  # never kill(0)-like targets or our own group
        members = _members(pgid)
        if not any(_belongs(pid, run_id, directory) for pid in members):
            continue  # gone, or the id now names someone else's group
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        killed.append(pgid)
    deadline = time.monotonic() + wait
    while killed and time.monotonic() < deadline and any(_members(g) for g in killed):
        time.sleep(0.05)
    return killed


def _members(pgid: int) -> list[int]:
    """The live (not zombie) processes of a process group."""
    import psutil

    found = []
    for pid in psutil.pids():
        try:
            if os.getpgid(pid) == pgid and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                found.append(pid)
        except (OSError, psutil.Error):
            continue
    return found


def _belongs(pid: int, run_id: str, directory: Path) -> bool:
    """Whether a process is one of the run's: the run's id in its environment, or working inside
    the run's directory (the installer, which has no run id in its environment)."""
    import psutil

    try:
        process = psutil.Process(pid)
        if process.environ().get(RUN_ID_VARIABLE) == run_id:
            return True
        cwd = Path(process.cwd())
    except (OSError, psutil.Error):
        return False
    root = directory.resolve()
    return cwd == root or cwd.is_relative_to(root)


def run_step(argv: list[str], log: Callable[[str], None], *, directory: Path, stop: threading.Event,
             grace: float = 5.0) -> int:
    """Run a preparation step in a process group of its own (recorded, with the parent-death
    signal), logging its output line by line; returns its exit code. A stop request ends the whole
    group (SIGTERM, SIGKILL after ``grace`` seconds) and raises ``Stopped``."""
    proc = subprocess.Popen([*pdeathsig_prefix(), *argv], cwd=directory, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    record(directory, proc.pid)
    reader = threading.Thread(target=_lines, args=(proc.stdout, log), daemon=True)
    reader.start()
    while proc.poll() is None:
        if stop.wait(0.05):
            _end_group(proc, grace)
            reader.join(timeout=1)
            raise Stopped(f"stopped while running {Path(argv[0]).name}")
    reader.join()
    return proc.returncode


def _lines(stream: IO[bytes] | None, log: Callable[[str], None]) -> None:
    assert stream is not None
    for raw in stream:
        log(raw.decode("utf-8", "replace").rstrip("\n"))


def _end_group(proc: subprocess.Popen[bytes], grace: float) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(grace)
    # Its children may outlive it (a build backend): the group goes whole.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)
