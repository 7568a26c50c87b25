"""The scheduler: starts queued runs when this machine has room for them.

Runs wait as ``queued`` in the store. Each agent (one per home and database) runs a scheduler, and
many agents may share one database (a team on PostgreSQL). On each tick, the scheduler:

- renews its agent's lease (``agent:<id>``, for ``lease`` seconds; it also says what this machine
  offers), and acts on the runs of agents whose lease expired: a run claimed and never handed to a
  supervisor goes back to the queue, one that was is marked lost;
- carries out the stop requests written for the runs it holds (SIGTERM to their supervisors);
- counts the runs it holds (and only those) against this machine: slots, GPUs, CPU cores, memory;
- claims queued runs of its executor (``runyard run --on``; others wait for an agent that has
  theirs) in order (higher priority first, then older first) while they fit, and hands
  each to the executor with its GPUs in ``CUDA_VISIBLE_DEVICES``. A run that waits for room does not
  hold back a later one that fits. A run that asks for more than this machine has, and more than any
  other machine serving the database has, fails at once with the reason.

Claiming is a conditional update that records the holder, so two agents never start the same run;
the queue lives in the store, so an agent's death loses nothing.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from runyard.config import Settings
from runyard.exec.executors import kind_of, served_here
from runyard.exec.spec import Executor, LaunchSpec, Mount
from runyard.store.api import Claim, Run, RunPatch
from runyard.store.claims_sql import AGENT_LEASE, agent_lease
from runyard.store.sql import SqlStore
from runyard.types import RunKind, RunStatus

#: A run left "starting" this long without its supervisor has failed to start.
START_TIMEOUT = 120.0
#: Seconds between asking the executor to let go of what it made for runs that ended.
FORGET_EVERY = 2.0
#: Seconds between measurements of a cluster: other work on it takes and frees resources.
MEASURE_EVERY = 2.0
#: Seconds a run that ended is remembered, for the cluster's reports made before it ended.
ENDED_HELD_FOR = 60.0
#: Seconds after a run left us that the cluster may still count its resources as in use (its job
#: ends a moment after the run records its end, and the cluster's accounting lags a little).
RELEASE_LAG = 3.0


def default_slots(gpu_count: int) -> int:
    return gpu_count if gpu_count > 0 else max(1, (os.cpu_count() or 2) // 2)


def agent_id(home: Path, key: str) -> str:
    """The id of this home's agent for one database (``key``: see ``spool.rundir.target_key``).

    Kept in the home, so that an agent restarted on it still holds the runs the last one claimed
    (and runs their stop requests); a new home is a new agent.
    """
    from runyard.ids import new_ulid

    path = home / "agents" / f"{key}.id"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with path.open("x") as f:
            f.write(new_ulid() + "\n")
    except FileExistsError:
        pass  # another process made it first: use theirs
    return path.read_text().strip()


def home_agents(home: Path) -> set[str]:
    """The ids of the agents this home has had (one per database it served)."""
    directory = home / "agents"
    return {p.read_text().strip() for p in directory.glob("*.id")} if directory.is_dir() else set()


@dataclass(frozen=True)
class Machine:
    """What a machine offers launched runs; an agent's lease carries it, so that other agents know."""

    host: str
    slots: int
    gpus: int
    cpus: int
    #: Bytes of memory.
    memory: int
    #: The executor whose runs it takes: a cluster behind an executor is one machine of that kind.
    executor: str = "local"
    #: A cluster's nodes, each (GPUs, CPU cores, bytes of memory): a run must fit on one of them.
    #: Empty for one machine.
    nodes: tuple[tuple[int, int, int], ...] = ()
    #: What was in use on a cluster when it was measured (GPUs, CPU cores, bytes of memory), by
    #: runyard's runs and any other work, and when (``time.time()`` of the cluster's report).
    used: tuple[int, int, int] = (0, 0, 0)
    measured_at: float = 0.0

    @classmethod
    def here(cls, settings: Settings, gpus: int) -> Machine:
        import psutil

        return cls(socket.gethostname(), settings.slots or default_slots(gpus), gpus,
                   psutil.cpu_count(logical=True) or 1, int(psutil.virtual_memory().total))

    @classmethod
    def of(cls, info: Mapping[str, Any]) -> Machine | None:
        try:
            nodes = tuple((int(g), int(c), int(m)) for g, c, m in info.get("nodes") or ())
            return cls(str(info["host"]), int(info["slots"]), int(info["gpus"]), int(info["cpus"]),
                       int(info["memory"]), str(info.get("executor") or "local"), nodes)
        except (KeyError, TypeError, ValueError):
            return None  # written by another version: not a machine we can judge

    def info(self) -> dict[str, Any]:
        return asdict(self)

    def lacks(self, need: Need) -> str | None:
        """What this machine lacks for ``need`` even when idle, in words; None if it could run it."""
        if need.gpus > self.gpus:
            return f"{need.gpus} GPU(s); {self.host} has {self.gpus}"
        if need.cpus > self.cpus:
            return f"{need.cpus} CPU cores; {self.host} has {self.cpus}"
        if need.memory > self.memory:
            return f"{_size(need.memory)} of memory; {self.host} has {_size(self.memory)}"
        if self.nodes and not any(need.gpus <= g and need.cpus <= c and need.memory <= m for g, c, m in self.nodes):
            # Enough in all, spread over nodes: a job runs on one node, so it would wait forever.
            sizes = ", ".join(f"{g} GPU(s) + {c} cores + {_size(m)}" for g, c, m in sorted(self.nodes, reverse=True))
            return (f"{need.gpus} GPU(s), {need.cpus} cores and {_size(need.memory)} on one node; "
                    f"the nodes of {self.host} have {sizes}")
        return None


@dataclass(frozen=True)
class Need:
    """What a run asks for (``runyard run --gpus/--cpus/--memory``, or its machine profile)."""

    gpus: int = 0
    cpus: int = 0
    memory: int = 0

    @classmethod
    def of(cls, run: Run) -> Need:
        r = run.resources
        return cls(int(r.get("gpus") or 0), int(r.get("cpus") or 0), int(r.get("memory") or 0))


def _earliest(*times: float | None) -> float | None:
    known = [t for t in times if t is not None]
    return min(known) if known else None


def _size(n: int) -> str:
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} bytes"


class Scheduler:
    def __init__(self, store: SqlStore, settings: Settings, executor: Executor, gpus: int, *,
                 agent: str | None = None, machine: Machine | None = None,
                 on_status: Callable[[int, str, str], object] | None = None) -> None:
        from runyard.spool.rundir import target_key

        self.store = store
        self.settings = settings
        self.executor = executor
        #: The runs this scheduler starts and counts: those of its executor.
        self.kind = executor.name
        self.machine = machine if machine is not None else Machine.here(settings, gpus)
        self.gpus = self.machine.gpus
        self.slots = self.machine.slots
        # One agent id per executor: each scheduler holds its runs and says what its machine offers.
        key = target_key(settings) if self.kind == "local" else f"{target_key(settings)}-{self.kind}"
        self.agent = agent if agent is not None else agent_id(settings.home, key)
        self.lease = settings.lease
        #: Told when this scheduler ends a run (number, status, message): the agent's alert rules.
        self.on_status = on_status
        #: The runs of its executor this agent held at the last tick (starting or running).
        self.holding = 0
        self._renewed = self._forgot = self._measured = -float("inf")
        #: The runs held at the last tick: number -> (what it asked for, since when it holds it on
        #: the cluster: when its job was first seen placed, or when it started).
        self._held: dict[int, tuple[Need, float | None]] = {}
        #: Runs held until lately: number -> (what it asked for, when it started, when it left us).
        self._left: dict[int, tuple[Need, float | None, float]] = {}

    def tick(self) -> tuple[int, int]:
        """Start what fits; returns (runs started, runs still queued)."""
        if time.monotonic() - self._measured >= MEASURE_EVERY:
            self._measure()
        if time.monotonic() - self._renewed >= self.lease / 3:
            # Renewed well before it lapses, so that a slow tick never lets another agent judge us gone.
            self.store.take_lease(agent_lease(self.agent), self.agent, self.lease, self.machine.host,
                                  self.machine.info())
            self._renewed = time.monotonic()
            self._adopt()
            self._release_orphans()
        mine = self._carry_out_stops(self._mine(self.store.held_by(self.agent)))
        mine = self._requeue_unsubmitted(mine)
        self._fail_stuck(mine)
        mine = self._mark_ended(mine)
        if time.monotonic() - self._forgot > FORGET_EVERY:
            # What the executor made for runs that ended goes (a Ray run's token), soon after they did.
            with contextlib.suppress(Exception):  # the next time is as good
                self.executor.forget(self.store)
            self._forgot = time.monotonic()
        self.holding = len(mine)
        local = [run for run, _ in mine]
        self._remember(local)
        # A model server waits for requests most of its life: it takes no slot from training runs,
        # which would otherwise queue behind it for as long as it serves (its GPUs count as any run's).
        used = sum(1 for r in local if r.kind is not RunKind.SERVE)
        busy = {g for r in local for g in r.resources.get("assigned_gpus", [])}
        # What other work takes on a cluster counts as taken: runs sent beyond it would wait in the
        # cluster's own queue, out of runyard's order and priorities.
        other_gpus, other_cpus, other_memory = self._used_by_others()
        cpus = sum(Need.of(r).cpus for r in local) + other_cpus
        memory = sum(Need.of(r).memory for r in local) + other_memory
        queued = [r for r in self.store.runs_with_status([RunStatus.QUEUED]) if kind_of(r.executor) == self.kind]
        started = failed = 0
        others: list[Machine] | None = None
        for run in queued:
            need = Need.of(run)
            lacking = self.machine.lacks(need)
            if lacking is not None:
                others = self._others() if others is None else others
                if not any(m.lacks(need) is None for m in others):
                    elsewhere = "; no other machine serving this database has that either" if others else ""
                    self.store.update_run(run.number, RunPatch(
                        status=RunStatus.FAILED, status_message=f"asks for {lacking}{elsewhere}"))
                    failed += 1
                continue  # another machine serving this database could run it: leave it to that agent
            if used >= self.slots and run.kind is not RunKind.SERVE:
                continue  # still read on: a run that can never fit must fail now, not when a slot frees
            free = [g for g in range(self.gpus) if g not in busy]
            free = free[:max(0, len(free) - other_gpus)]
            if need.gpus > len(free) or cpus + need.cpus > self.machine.cpus \
                    or memory + need.memory > self.machine.memory:
                continue  # waits for room; a later run that fits may start meanwhile
            gpus = free[:need.gpus]
            claimed = self.store.claim(run.number, gpus, self.agent, self.machine.host)
            if claimed is None:
                continue  # another agent was first
            if not self.store.mark_submitted(claimed.number, self.agent):
                # Asked to stop between our claim and now: it never starts.
                self.store.update_run(claimed.number, RunPatch(status=RunStatus.STOPPED,
                                                               status_message="stopped before it started"))
                continue
            self.executor.submit(self.spec_of(claimed, gpus))
            used += run.kind is not RunKind.SERVE
            busy.update(gpus)
            cpus += need.cpus
            memory += need.memory
            started += 1
        return started, len(queued) - started - failed

    def _measure(self) -> None:
        """What a cluster offers and what other work takes on it change: its executor is asked
        again every few seconds; each renewal of the lease tells other agents. (This machine's size
        is read once.)"""
        self._measured = time.monotonic()
        measure = getattr(self.executor, "machine", None)
        if measure is None:
            return
        with contextlib.suppress(Exception):  # unreachable for now: what it said last holds
            self.machine = measure()
            self.gpus, self.slots = self.machine.gpus, self.machine.slots

    def _remember(self, held: list[Run]) -> None:
        """Note since when each run holds its resources on a cluster, and the runs that left us
        since the last tick: a cluster's report made before they ended still counts their
        resources as in use, by them and not by other work."""
        now = time.time()
        placed = getattr(self.executor, "placed", None)
        current: dict[int, tuple[Need, float | None]] = {}
        for run in held:
            since = _earliest(run.started_at, self._held.get(run.number, (None, None))[1])
            if since is None and placed is not None and placed(run.id):
                # Seen placed before its start arrives (its supervisor takes a moment to start and
                # to say so): from then on the cluster's reports count it, as ours.
                since = now
            current[run.number] = (Need.of(run), since)
        for number, (need, started) in self._held.items():
            if number not in current:
                self._left[number] = (need, started, now)
        self._held = current
        self._left = {n: left for n, left in self._left.items() if now - left[2] < ENDED_HELD_FOR}

    def _used_by_others(self) -> tuple[int, int, int]:
        """GPUs, cores and memory that work other than this scheduler's runs took on its cluster
        when last measured: the cluster's use less what our runs held then. A run counts from when
        its job was seen placed (or its start) until it left us; one placed but not yet seen so
        counts as other work for a moment, which errs on the side of waiting."""
        machine = self.machine
        if machine.measured_at <= 0:
            return 0, 0, 0  # one machine: this scheduler's runs are all it counts
        at = machine.measured_at
        ours = [need for need, started in self._held.values() if started is not None and started <= at]
        ours += [need for need, started, left in self._left.values()
                 if started is not None and started <= at < left + RELEASE_LAG]
        gpus, cpus, memory = machine.used
        return (max(0, gpus - sum(n.gpus for n in ours)), max(0, cpus - sum(n.cpus for n in ours)),
                max(0, memory - sum(n.memory for n in ours)))

    def close(self) -> None:
        """The agent is leaving: if it holds no run, say so at once (its lease expires now, and what
        it said of its machine stays known); otherwise its lease lapses by itself."""
        with contextlib.suppress(Exception):  # leaving anyway: the lease lapses by itself
            if not self.store.held_by(self.agent):
                self.store.release_lease(agent_lease(self.agent), self.agent, keep=True)

    def _others(self) -> list[Machine]:
        """The other machines serving this database (their agents' leases, live or lapsed)."""
        found = [Machine.of(lease.info) for lease, _ in self.store.leases(AGENT_LEASE)
                 if lease.holder != self.agent]
        return [m for m in found if m is not None and m.executor == self.kind]

    def _release_orphans(self) -> None:
        """Act on the runs of agents whose lease expired: they will never report on them again.

        A run on a cluster outlives the agent that sent it there: a scheduler of that cluster takes
        it over while its job still runs. Other schedulers leave it to them, and act on it only when
        no live agent serves its executor, this one included (its cluster may not answer yet)."""
        served: set[str] | None = None
        for run, claim in self.store.orphaned_runs():
            if claim.agent == self.agent:
                continue
            kind = kind_of(run.executor)
            if kind != self.kind:
                if self.kind != "local":
                    continue
                served = self._served() if served is None else served
                if kind in served:
                    continue
            elif kind != "local" and claim.submitted_at is not None and self.executor.alive(run.id) \
                    and self.store.take_over_run(run.number, claim.agent, self.agent, self.machine.host):
                continue
            message = (f"its agent on {claim.host or 'another machine'} stopped renewing its lease "
                       f"(lease: {self.lease:g} s); the agent or its machine went away")
            status = self.store.release_orphan(run.number, claim.agent, message)
            if status is RunStatus.LOST and self.on_status is not None:
                self.on_status(run.number, status.value, message)

    def _served(self) -> set[str]:
        """The executors that some live agent serving this database schedules."""
        machines = [Machine.of(lease.info) for lease, live in self.store.leases(AGENT_LEASE) if live]
        return {m.executor for m in machines if m is not None} | served_here(self.settings)

    def _adopt(self) -> None:
        """Hold the runs this home launched before claims were recorded (an upgraded database)."""
        for run in self.store.unclaimed_runs(self.kind):
            if self.executor.submitted(run.id):
                self.store.adopt_run(run.number, self.agent, self.machine.host, submitted=True)

    def _mine(self, held: list[tuple[Run, Claim]]) -> list[tuple[Run, Claim]]:
        """Of the runs this agent holds, those of this scheduler's executor (another scheduler of the
        same agent looks after the rest)."""
        return [(run, claim) for run, claim in held if kind_of(run.executor) == self.kind]

    def _carry_out_stops(self, mine: list[tuple[Run, Claim]]) -> list[tuple[Run, Claim]]:
        """Stop requests others wrote for our runs (`runyard stop` elsewhere): SIGTERM to the
        supervisor, which records how the run ended."""
        for run, claim in mine:
            if claim.stop_requested_at is None or claim.stop_sent_at is not None:
                continue
            if self.executor.stop(run.id):
                self.store.stop_sent(run.number)
            elif run.status is RunStatus.STARTING and run.heartbeat_at is None \
                    and time.time() - (claim.submitted_at or claim.claimed_at) < START_TIMEOUT:
                continue  # its supervisor has not written its pid yet: next tick
            else:
                self.store.update_run(run.number, RunPatch(status=RunStatus.STOPPED,
                                                           status_message="stopped; no supervisor was running"))
                self.store.stop_sent(run.number)
        return mine

    def _requeue_unsubmitted(self, mine: list[tuple[Run, Claim]]) -> list[tuple[Run, Claim]]:
        """Queue again our runs that were claimed and never handed to a supervisor.

        This agent hands a run over in the tick that claims it, so one still unsubmitted at the start
        of a tick was claimed by this agent's previous life (killed in between, restarted since).
        """
        kept = []
        for run, claim in mine:
            if claim.submitted_at is None and run.status is RunStatus.STARTING:
                self.store.release_orphan(run.number, self.agent, "", holder_gone=False)
                continue
            kept.append((run, claim))
        return kept

    def _mark_ended(self, mine: list[tuple[Run, Claim]]) -> list[tuple[Run, Claim]]:
        """Runs whose supervisor the executor says has ended, though the run did not record its end
        (its machine died, or it was killed): lost, with what the executor knows. (The local
        executor leaves this to the spool's reader, which sees a writer die.)"""
        kept = []
        for run, claim in mine:
            why = self.executor.ended(run.id) if claim.submitted_at is not None else None
            if why is None:
                kept.append((run, claim))
                continue
            current = self.store.get_run(run.number)  # its last records may have arrived meanwhile
            if current.status.is_terminal():
                continue
            message = f"its supervisor ended without recording how the run ended: {why}"
            self.store.update_run(run.number, RunPatch(status=RunStatus.LOST, status_message=message))
            if self.on_status is not None:
                self.on_status(run.number, RunStatus.LOST.value, message)
        return kept

    def _fail_stuck(self, mine: list[tuple[Run, Claim]]) -> None:
        now = time.time()
        for run, _ in mine:
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
            db=settings.db, artifacts=settings.artifacts, s3_endpoint=settings.s3_endpoint,
            env=dict(launch.get("env") or {}),
            params={k: str(v) for k, v in (launch.get("params") or {}).items()},
            environment=dict(launch["environment"]) if launch.get("environment") is not None else None,
            pip=list(launch.get("pip") or []), requirements=launch.get("requirements"),
            site_packages=list(launch.get("site_packages") or []), python=launch.get("python") or "python3",
            mounts=[Mount(**{**m, "files": [tuple(f) for f in m.get("files", [])]}) for m in launch.get("mounts", [])],
            timeout=launch.get("timeout"), gpus=gpus, cpus=Need.of(run).cpus, memory=Need.of(run).memory,
            fsync=settings.fsync,
            system_interval=settings.system_interval,
            outputs_interval=settings.outputs_interval,
            output_limit=int(launch.get("output_limit") or settings.output_limit),
            big_code_files=str(launch.get("big_code_files") or settings.big_code_files),
            executor=self.kind, kind=run.kind.value,
        )
