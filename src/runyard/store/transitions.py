"""The run state machine: every change of a run's status is checked here, whatever route asks for it
(scheduler, agent, stop, rerun, a supervisor's or the SDK's records applied by ingest, locally or
through the server).

    queued ──► starting ──► running ──► finished | failed | stopped | timeout
      │  ▲        │            │
      │  └────────┘ (claimed,  └──► lost ──► finished | failed | stopped | timeout (a late report)
      │   never handed over)
      └──► stopped | failed (stopped before it was claimed; asks for what no machine has)

A run's own records (what a writer token may send) can make fewer moves: say it is running once
its supervisor started it, and how it ended. Never back into the queue, which would have the
scheduler start its command a second time beside the first.
"""

from __future__ import annotations

from runyard.errors import Conflict, InvalidArgument
from runyard.types import END_STATUSES, RunStatus

_S = RunStatus
_ENDED = END_STATUSES

#: What each status may become, by any route.
ALLOWED: dict[RunStatus, frozenset[RunStatus]] = {
    _S.QUEUED: frozenset({_S.STARTING, _S.STOPPED, _S.FAILED}),
    # Back to queued: claimed by an agent that went away before handing it to a supervisor.
    _S.STARTING: frozenset({_S.RUNNING, _S.QUEUED, _S.LOST, *_ENDED}),
    _S.RUNNING: frozenset({_S.LOST, *_ENDED}),
    # Its supervisor was only cut off: it may still report how the run ended.
    _S.LOST: _ENDED,
}

#: The moves a run's own records may make (ingest from a spool or a writer token).
BY_RECORDS: dict[RunStatus, frozenset[RunStatus]] = {
    _S.STARTING: frozenset({_S.RUNNING, *_ENDED}),
    _S.RUNNING: _ENDED,
    _S.LOST: _ENDED,
}


def may_become(old: RunStatus, new: RunStatus) -> bool:
    """Whether any route may move a run that is ``old`` to ``new``."""
    return old is new or new in ALLOWED.get(old, frozenset())


def check_transition(old: RunStatus, new: RunStatus, by_records: bool = False, field: str = "status") -> None:
    """Raise unless a run that is ``old`` may become ``new``. ``by_records``: the change comes from
    the run's records (ingest), which is refused as InvalidArgument naming ``field`` (a 400 from the
    server, a quarantined record locally); any other route gets Conflict."""
    if old is new:
        return  # nothing changes: a re-read start, a second stop
    table = BY_RECORDS if by_records else ALLOWED
    if new in table.get(old, frozenset()):
        return
    if by_records:
        allowed = ", ".join(sorted(s.value for s in table.get(old, frozenset()))) or "nothing"
        raise InvalidArgument(f"{field}: a run's records cannot move it from {old.value} to {new.value} "
                              f"(from {old.value} they may make it: {allowed})")
    if old.is_terminal():
        raise Conflict(f"the run already ended as {old.value}; it cannot become {new.value}")
    raise Conflict(f"a {old.value} run cannot become {new.value}")
