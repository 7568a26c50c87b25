"""Stopping and re-launching runs: shared by the CLI (local mode) and the server's routes.

Only the agent that holds a launched run acts on it. A run held by this home's agent is stopped
here and now (SIGTERM to its supervisor); one held by another agent (a teammate's machine on the
same database) gets a stop request in the store, which its holder carries out on its next tick.
Either way the run's final state is what its supervisor records, not what the requester assumes.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runyard.errors import InvalidArgument
from runyard.store.api import Run, RunPatch
from runyard.types import RunStatus

if TYPE_CHECKING:
    from runyard.config import Settings


def stop_for_alert(store: Any, settings: Settings, number: int, why: str) -> str:
    """Stop a run because an alert rule says so, noting why in its notes."""
    store.append_note(number, f"Stopped by an alert: {why}")
    return stop_run(store, settings, store.get_run(number))


def stop_run(store: Any, settings: Settings, run: Run) -> str:
    """Stop one run (through its executor, a request to its holder, or mark it stopped); returns
    what happened, for people. ``store`` is a SqlStore, ``settings`` those of the home this process serves."""
    from runyard.exec.executors import executor_for, kind_of
    from runyard.exec.scheduler import home_agents

    home = settings.home
    if run.status.is_terminal():
        return f"run {run.number} already ended ({run.status.value})"
    if run.status is RunStatus.QUEUED:
        if store.stop_if_queued(run.number, "stopped while queued"):
            return f"run {run.number} stopped (it was queued)"
        run = store.get_run(run.number)  # an agent claimed it meanwhile
        if run.status.is_terminal():
            return f"run {run.number} already ended ({run.status.value})"
    claim = store.get_claim(run.number)
    if claim is not None and claim.agent not in home_agents(home):
        return _request_stop(store, settings, run)
    executor = executor_for(kind_of(run.executor), settings)
    if executor.stop(run.id) or (run.status is RunStatus.STARTING and _stop_when_started(executor, run.id)):
        return f"run {run.number}: stopping (SIGTERM, then SIGKILL after the grace period)"
    store.update_run(run.number, RunPatch(status=RunStatus.STOPPED,
                                          status_message="stopped; no supervisor was running"))
    return f"run {run.number} stopped (no supervisor was running)"


def _request_stop(store: Any, settings: Settings, run: Run) -> str:
    from runyard.store.claims_sql import agent_lease

    claim = store.request_stop(run.number)
    if claim is None:  # its holder was judged gone meanwhile and the run queued again
        return stop_run(store, settings, store.get_run(run.number))
    where = f"its agent on {claim.host or 'another machine'}"
    leases = store.leases(agent_lease(claim.agent))
    if not any(live for _, live in leases):
        return (f"run {run.number}: stop requested, but {where} has not renewed its lease; if it does not "
                "come back, the run is marked lost")
    return f"run {run.number}: stop requested from {where}, which stops it within seconds"


def _stop_when_started(executor: Any, run_id: str, wait: float = 10.0) -> bool:
    """A run being started has no supervisor yet: give it a moment to appear, then stop it."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if executor.stop(run_id):
            return True
        time.sleep(0.1)
    return False


@dataclass(frozen=True)
class Overrides:
    """What a rerun changes besides params, written as for ``runyard run`` (``env`` already parsed)."""

    pip: Sequence[str] = ()
    env: dict[str, str] = field(default_factory=dict)
    timeout: str | None = None
    mounts: Sequence[str] = ()
    gpus: int | None = None


def rerun(settings: Settings, parent: Run, params: dict[str, str], name: str | None, cwd: Path,
          overrides: Overrides | None = None) -> int:
    """Queue the parent's launch again (same snapshot), with changed params and options; returns the
    new number. A param the parent does not have is refused: a rerun changes params, it adds none."""
    from runyard.exec import executors
    from runyard.exec.submit import Submission, submit

    if parent.launch is None or parent.snapshot_id is None:
        raise InvalidArgument(f"run {parent.number} was not launched by `runyard run`, so there is nothing to "
                              "launch again; run its script with `runyard run`")
    known = parent.launch.get("params") or {}
    unknown = [key for key in params if key not in known]
    if unknown:
        raise InvalidArgument(f"--param {unknown[0]}: run {parent.number} has no param {unknown[0]!r}; its params: "
                              f"{', '.join(sorted(known)) or 'none'} (a rerun changes params, it adds none)")
    more = overrides or Overrides()
    resources = {k: v for k, v in parent.resources.items() if k != "assigned_gpus"}
    sub = Submission(command=list(parent.launch.get("argv") or []), shell=bool(parent.launch.get("shell")),
                     cwd=cwd, project=parent.project, name=name, labels=parent.labels, params=params,
                     pip=more.pip, env=dict(more.env), timeout=more.timeout, mounts=more.mounts, gpus=more.gpus,
                     priority=parent.priority, parent=parent.number, launch=parent.launch, resources=resources,
                     executor=executors.kind_of(parent.executor), kind=parent.kind,
                     snapshot=(parent.snapshot_id, parent.git_commit, parent.git_branch, parent.git_diff_ref))
    return submit(settings, sub).number
