"""Plain value types shared by every layer. Standard library only."""

from __future__ import annotations

from enum import StrEnum
from typing import NewType

#: How recent a failure must be for ``runyard status`` (and ``/api/v1/status``) to count it, in seconds.
RECENT_FAILURES = 24 * 3600.0

#: A run's unique, sortable id (a ULID, 26 characters of Crockford base32).
RunId = NewType("RunId", str)


class RunStatus(StrEnum):
    """Where a run is in its life. Stored as its plain string value."""

    #: Waiting in the queue for resources.
    QUEUED = "queued"
    #: Claimed by the scheduler; its supervisor is setting up.
    STARTING = "starting"
    #: The user's code is running.
    RUNNING = "running"
    #: Exited with code 0.
    FINISHED = "finished"
    #: Exited with a non-zero code, raised, or could not start.
    FAILED = "failed"
    #: Stopped by a person or an alert rule.
    STOPPED = "stopped"
    #: Ended by its ``--timeout``.
    TIMEOUT = "timeout"
    #: Its supervisor's heartbeat stopped (machine reboot, supervisor killed).
    LOST = "lost"

    def is_terminal(self) -> bool:
        """True once the run can change state no more."""
        return self in _TERMINAL

    def is_active(self) -> bool:
        """True while the run is queued, starting or running."""
        return not self.is_terminal()


class RunKind(StrEnum):
    """What a launched run executes; a kind decides the command its submission builds. Stored as its
    plain string value: a closed set, extended by adding a member (and what builds its command)."""

    #: A command (``runyard run -- python train.py``), and every run the SDK starts itself.
    SCRIPT = "script"
    #: A notebook executed headless with its parameters (``runyard run notebook.ipynb -p lr=0.1``).
    NOTEBOOK = "notebook"
    #: JupyterLab served for its user until it is idle (``runyard notebook``): long-lived, its files kept.
    JUPYTERLAB = "jupyterlab"
    #: A model server (``runyard serve``): long-lived, its request counts and latency its metrics.
    SERVE = "serve"


_TERMINAL = frozenset(
    {RunStatus.FINISHED, RunStatus.FAILED, RunStatus.STOPPED, RunStatus.TIMEOUT, RunStatus.LOST}
)

#: How a run's own process says it ended (the supervisor's and the SDK's end event); ``lost`` is
#: only ever decided by others.
END_STATUSES = frozenset({RunStatus.FINISHED, RunStatus.FAILED, RunStatus.STOPPED, RunStatus.TIMEOUT})
