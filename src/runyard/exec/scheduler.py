"""The scheduler: starts queued runs when this machine has room for them.

Runs wait as ``queued`` in the store. On each tick, the scheduler counts the runs that hold a slot
(starting or running here), and claims queued runs in order (higher priority first, then older
first) while slots and GPUs are free, handing each to the executor with its GPUs in
``CUDA_VISIBLE_DEVICES``. A run asking for more GPUs than the machine has fails at once, with the
reason. Claiming is a conditional update, so two agents never start the same run; the queue lives
in the store, so an agent's death loses nothing.
"""

from __future__ import annotations

import os
import time
from typing import Any

from runyard.config import Settings
from runyard.exec.spec import Executor, LaunchSpec, Mount
from runyard.store.api import Run, RunPatch
from runyard.store.sql import SqlStore
from runyard.types import RunStatus

#: A run left "starting" this long without its supervisor has failed to start.
START_TIMEOUT = 120.0
#: A run seen "starting" but never handed to the executor for this long goes back to the queue.
REQUEUE_GRACE = 2.0


def default_slots(gpu_count: int) -> int:
    return gpu_count if gpu_count > 0 else max(1, (os.cpu_count() or 2) // 2)


def gpu_count() -> int:
    from runyard.sdk.sampler import Gpus

    gpus = Gpus()
    try:
        return len(gpus.handles)
    finally:
        gpus.close()


class Scheduler:
    def __init__(self, store: SqlStore, settings: Settings, executor: Executor, gpus: int) -> None:
        self.store = store
        self.settings = settings
        self.executor = executor
        self.gpus = gpus
        self.slots = settings.slots or default_slots(gpus)
        #: Runs seen "starting" but not submitted, and when first seen so (see _requeue_unsubmitted).
        self._unsubmitted: dict[str, float] = {}

    def tick(self) -> tuple[int, int]:
        """Start what fits; returns (runs started, runs still queued)."""
        active = self.store.runs_with_status([RunStatus.STARTING, RunStatus.RUNNING])
        local = [r for r in active if r.executor == "local"]
        requeued = self._requeue_unsubmitted(local)
        local = [r for r in local if r.id not in requeued]
        self._fail_stuck(local)
        used = len(local)
        busy = {g for r in local for g in r.resources.get("assigned_gpus", [])}
        queued = self.store.runs_with_status([RunStatus.QUEUED])
        started = 0
        for run in queued:
            if used >= self.slots:
                break
            need = int(run.resources.get("gpus", 0) or 0)
            if need > self.gpus:
                self.store.update_run(run.number, RunPatch(
                    status=RunStatus.FAILED,
                    status_message=f"asks for {need} GPU(s); this machine has {self.gpus}"))
                continue
            free = [g for g in range(self.gpus) if g not in busy]
            if need > len(free):
                continue  # waits for GPUs; a later run that fits may start meanwhile
            claimed = self.store.claim_run(run.number, free[:need])
            if claimed is None:
                continue
            self.executor.submit(self.spec_of(claimed, free[:need]))
            used += 1
            busy.update(free[:need])
            started += 1
        return started, len(queued) - started

    def _requeue_unsubmitted(self, local: list[Run]) -> set[str]:
        """Queue again the runs an agent claimed and died before submitting (killed between the two).

        This agent submits what it claims within one tick, so a run still unsubmitted after
        ``REQUEUE_GRACE`` across ticks was claimed by an agent that is gone: no supervisor exists or
        can appear for it, and failing it after START_TIMEOUT would lose a run nobody started.
        """
        now = time.monotonic()
        waiting: dict[str, float] = {}
        requeued: set[str] = set()
        for run in local:
            if run.status is not RunStatus.STARTING or run.heartbeat_at is not None \
                    or self.executor.submitted(run.id):
                continue
            first = waiting[run.id] = self._unsubmitted.get(run.id, now)
            if now - first >= REQUEUE_GRACE:
                self.store.update_run(run.number, RunPatch(status=RunStatus.QUEUED))
                del waiting[run.id]
                requeued.add(run.id)
        self._unsubmitted = waiting
        return requeued

    def _fail_stuck(self, local: list[Run]) -> None:
        now = time.time()
        for run in local:
            if run.status is RunStatus.STARTING and now - (run.queued_at or run.created_at) > START_TIMEOUT \
                    and not self.executor.alive(run.id) and run.heartbeat_at is None:
                message = "its supervisor did not start (see runs/<id>/supervisor.log in the home)"
                self.store.update_run(run.number, RunPatch(status=RunStatus.FAILED, status_message=message))

    def spec_of(self, run: Run, gpus: list[int]) -> LaunchSpec:
        launch: dict[str, Any] = dict(run.launch or {})
        settings = self.settings
        return LaunchSpec(
            run_id=run.id, number=run.number, argv=list(launch.get("argv") or run.command or []),
            shell=bool(launch.get("shell")), snapshot_id=run.snapshot_id or "", home=str(settings.home),
            db=settings.db, artifacts=str(settings.artifacts), env=dict(launch.get("env") or {}),
            params={k: str(v) for k, v in (launch.get("params") or {}).items()},
            environment=dict(launch["environment"]) if launch.get("environment") is not None else None,
            pip=list(launch.get("pip") or []), requirements=launch.get("requirements"),
            site_packages=list(launch.get("site_packages") or []), python=launch.get("python") or "python3",
            mounts=[Mount(**{**m, "files": [tuple(f) for f in m.get("files", [])]}) for m in launch.get("mounts", [])],
            timeout=launch.get("timeout"), gpus=gpus, fsync=settings.fsync,
            system_interval=settings.system_interval,
            outputs_interval=settings.outputs_interval,
        )
