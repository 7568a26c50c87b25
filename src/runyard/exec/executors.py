"""Which executor runs a run: each run records its ``executor`` (``runyard run --on NAME``, or the
``executor`` setting), and every place that starts or stops runs asks this module for it, by name.

An agent schedules the runs of the executors it has (``Scheduler`` per executor); a run of an
executor no agent serving the database has stays queued, and ``runyard ps`` shows for which.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from runyard.config import EXECUTORS
from runyard.errors import InvalidArgument

if TYPE_CHECKING:
    from runyard.config import Settings
    from runyard.exec.spec import Executor

#: Runs recorded before runs named their executor ran on the machine that queued them.
DEFAULT = "local"


def kind_of(executor: str | None) -> str:
    """The executor of a run as recorded (None for runs queued before runs recorded it)."""
    return executor or DEFAULT


def check(name: str, asked_by: str = "--on") -> str:
    """``name`` if runyard has such an executor, else InvalidArgument naming the ones it has."""
    if name not in EXECUTORS:
        raise InvalidArgument(f"{asked_by} {name}: no such executor; runyard runs on {', '.join(EXECUTORS)}")
    return name


def executor_for(name: str | None, settings: Settings) -> Executor:
    """The executor that starts and stops runs of ``name`` for this home."""
    kind = check(kind_of(name), "executor")
    if kind == "ray":
        from runyard.exec.ray import RayExecutor

        return RayExecutor(settings)
    from runyard.exec.local import LocalExecutor

    return LocalExecutor(settings.home)


def served_here(settings: Settings) -> set[str]:
    """The executors this home's agent schedules: its own machine's, and a cluster's it is set up
    for (whether or not the cluster answers yet)."""
    return {DEFAULT} | ({"ray"} if settings.ray else set())
