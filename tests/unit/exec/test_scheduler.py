"""The scheduler's recovery of runs an agent claimed and never started (it was killed in between)."""

from __future__ import annotations

from pathlib import Path

import pytest

from runyard.config import resolve
from runyard.exec import scheduler as scheduling
from runyard.exec.scheduler import Scheduler
from runyard.exec.spec import LaunchSpec
from runyard.store.newrun import NewRun
from runyard.store.sql import SqlStore
from runyard.types import RunStatus


class RecordingExecutor:
    """Starts nothing; remembers what it was handed, as the local executor's spec file would."""

    def __init__(self) -> None:
        self.specs: list[LaunchSpec] = []

    def submit(self, spec: LaunchSpec) -> None:
        self.specs.append(spec)

    def stop(self, run_id: str) -> bool:
        return False

    def alive(self, run_id: str) -> bool:
        return False

    def submitted(self, run_id: str) -> bool:
        return any(s.run_id == run_id for s in self.specs)


def test_a_run_claimed_by_an_agent_that_died_before_starting_it_is_queued_again(
        store: SqlStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = resolve(environ={"RUNYARD_HOME": str(tmp_path / "home"), "RUNYARD_SLOTS": "1"}, cwd=tmp_path)
    number = store.create_run(NewRun(project="p", status=RunStatus.QUEUED, executor="local", command=["true"])).number
    assert store.claim_run(number, []) is not None  # the dead agent's claim: starting, never submitted
    executor = RecordingExecutor()
    clock = [1000.0]
    monkeypatch.setattr(scheduling.time, "monotonic", lambda: clock[0])
    agent = Scheduler(store, settings, executor, gpus=0)

    assert agent.tick() == (0, 0)  # seen once: it might still be on its way to an executor
    assert store.get_run(number).status is RunStatus.STARTING
    clock[0] += scheduling.REQUEUE_GRACE
    started, _ = agent.tick()  # still unsubmitted after the grace: queued again, and started now
    assert started == 1 and [s.number for s in executor.specs] == [number]
    assert store.get_run(number).status is RunStatus.STARTING

    clock[0] += 10 * scheduling.REQUEUE_GRACE  # submitted: left alone however long it takes to start
    assert agent.tick() == (0, 0) and len(executor.specs) == 1


def test_a_run_that_has_heartbeated_is_never_queued_again(store: SqlStore, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from runyard.store.api import RunPatch

    settings = resolve(environ={"RUNYARD_HOME": str(tmp_path / "home")}, cwd=tmp_path)
    number = store.create_run(NewRun(project="p", status=RunStatus.QUEUED, executor="local", command=["true"])).number
    store.claim_run(number, [])
    store.update_run(number, RunPatch(heartbeat_at=1.0))  # its supervisor exists somewhere
    clock = [0.0]
    monkeypatch.setattr(scheduling.time, "monotonic", lambda: clock[0])
    agent = Scheduler(store, settings, RecordingExecutor(), gpus=0)
    for _ in range(3):
        agent.tick()
        clock[0] += scheduling.REQUEUE_GRACE
    assert store.get_run(number).status is RunStatus.STARTING
