"""The scheduler on a real store: what it claims, what it leaves to other agents, and what it does
with the runs of an agent that went away (each tick is what the agent's loop does)."""

from __future__ import annotations

from pathlib import Path

import pytest

from runyard.config import Settings, resolve
from runyard.exec.scheduler import Machine, Scheduler
from runyard.exec.spec import LaunchSpec
from runyard.store.newrun import NewRun
from runyard.store.sql import SqlStore
from runyard.types import RunStatus

GIB = 1 << 30


class RecordingExecutor:
    """Starts nothing; remembers what it was handed, as the local executor's spec file would."""

    def __init__(self, name: str = "local") -> None:
        self.name = name
        self.specs: list[LaunchSpec] = []
        self.stopped: list[str] = []
        self.running: set[str] = set()

    def submit(self, spec: LaunchSpec) -> None:
        self.specs.append(spec)
        self.running.add(spec.run_id)

    def stop(self, run_id: str) -> bool:
        if run_id not in self.running:
            return False
        self.stopped.append(run_id)
        return True

    def alive(self, run_id: str) -> bool:
        return run_id in self.running

    def ended(self, run_id: str) -> str | None:
        return None

    def forget(self, store: object) -> None:
        pass

    def submitted(self, run_id: str) -> bool:
        return any(s.run_id == run_id for s in self.specs)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return resolve(environ={"RUNYARD_HOME": str(tmp_path / "home"), "RUNYARD_LEASE": "30"}, cwd=tmp_path)


def agent(store: SqlStore, settings: Settings, name: str = "a", slots: int = 4, gpus: int = 0, cpus: int = 8,
          memory: int = 16 * GIB, executor_name: str = "local") -> tuple[Scheduler, RecordingExecutor]:
    executor = RecordingExecutor(executor_name)
    machine = Machine(f"host-{name}", slots, gpus, cpus, memory)
    return Scheduler(store, settings, executor, gpus, agent=name, machine=machine), executor


def queue(store: SqlStore, priority: int = 0, executor: str | None = "local", **resources: int) -> int:
    return store.create_run(NewRun(project="p", status=RunStatus.QUEUED, executor=executor, command=["true"],
                                   resources={"gpus": 0, **resources}, priority=priority)).number


def started(executor: RecordingExecutor) -> list[int]:
    return [s.number for s in executor.specs]


def test_runs_wait_for_cpus_and_memory_and_one_that_can_never_fit_fails_at_once(
        store: SqlStore, settings: Settings) -> None:
    a, executor = agent(store, settings, cpus=8, memory=16 * GIB)
    big = queue(store, cpus=6)
    waits_for_cpus = queue(store, cpus=4)
    fits_beside = queue(store, cpus=2, memory=4 * GIB)
    waits_for_memory = queue(store, memory=14 * GIB)
    too_many_cores = queue(store, cpus=64)
    too_much_memory = queue(store, memory=1 << 50)
    assert a.tick() == (2, 2)  # two started, two waiting (two failed)
    assert started(executor) == [big, fits_beside]
    assert store.get_run(waits_for_cpus).status is RunStatus.QUEUED
    assert store.get_run(waits_for_memory).status is RunStatus.QUEUED
    for number, why in ((too_many_cores, "asks for 64 CPU cores; host-a has 8"),
                        (too_much_memory, "asks for 1024.0 TiB of memory; host-a has 16.0 GiB")):
        run = store.get_run(number)
        assert (run.status, run.status_message) == (RunStatus.FAILED, why)
    store.update_run(big, _finished())  # cores come back: the 4-core run fits now, memory still does not
    assert a.tick() == (1, 1) and started(executor)[-1] == waits_for_cpus
    store.update_run(fits_beside, _finished())
    assert a.tick() == (1, 0) and started(executor)[-1] == waits_for_memory


def _finished():  # type: ignore[no-untyped-def]
    from runyard.store.api import RunPatch

    return RunPatch(status=RunStatus.FINISHED)


def test_each_agent_counts_only_its_own_runs_and_leaves_what_only_another_machine_fits(
        store: SqlStore, settings: Settings) -> None:
    a, on_a = agent(store, settings, "a", slots=1)
    b, on_b = agent(store, settings, "b", slots=1, gpus=2)
    b.tick()  # b's lease says what its machine has
    first, second, needs_gpus, needs_four = queue(store), queue(store), queue(store, gpus=2), queue(store, gpus=4)
    a.tick()
    b.tick()
    assert started(on_a) == [first] and started(on_b) == [second]  # one slot each, not one slot in all
    run = store.get_run(needs_four)
    assert run.status is RunStatus.FAILED
    assert run.status_message == ("asks for 4 GPU(s); host-a has 0; "
                                  "no other machine serving this database has that either")
    assert store.get_run(needs_gpus).status is RunStatus.QUEUED  # left to b, which is busy now
    store.update_run(second, _finished())
    a.tick()
    b.tick()
    assert started(on_b) == [second, needs_gpus] and on_b.specs[-1].gpus == [0, 1]


def test_the_runs_of_an_agent_whose_lease_expired_are_queued_again_or_lost(
        store: SqlStore, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    from runyard.exec import scheduler as scheduling

    clock = [1000.0]
    store.clock = lambda: clock[0]  # leases follow the store's clock
    monkeypatch.setattr(scheduling.time, "monotonic", lambda: clock[0])
    gone, _ = agent(store, settings, "gone", slots=2)
    running = queue(store)
    gone.tick()  # claims and submits `running`, then dies before handing over its next claim:
    never_submitted = queue(store)
    assert store.claim(never_submitted, [], "gone", "host-gone") is not None
    heard: list[tuple[int, str]] = []
    b, on_b = agent(store, settings, "b", slots=1)
    b.on_status = lambda number, status, message: heard.append((number, status))
    clock[0] += 29
    b.tick()
    assert on_b.specs == [] and store.get_run(running).status is RunStatus.STARTING  # the lease still holds
    clock[0] += settings.lease / 3  # past the lease, and time for b's next look
    b.tick()
    lost = store.get_run(running)
    assert lost.status is RunStatus.LOST and "host-gone stopped renewing its lease" in (lost.status_message or "")
    assert heard == [(running, "lost")]
    assert started(on_b) == [never_submitted]  # queued again, and started by b in the same tick


def test_a_restarted_agent_queues_again_what_it_claimed_and_never_started(store: SqlStore,
                                                                          settings: Settings) -> None:
    number = queue(store)
    store.take_lease("agent:a", "a", 30)
    assert store.claim(number, [], "a", "host-a") is not None  # then the agent was killed
    again, executor = agent(store, settings, "a")  # same home, same id
    assert again.tick() == (1, 0) and started(executor) == [number]
    assert store.get_run(number).status is RunStatus.STARTING


def test_a_stop_request_is_carried_out_by_the_holder(store: SqlStore, settings: Settings) -> None:
    a, executor = agent(store, settings, "a")
    number = queue(store)
    a.tick()
    claim = store.request_stop(number)  # what `runyard stop` on another machine writes
    assert claim is not None and claim.agent == "a"
    a.tick()
    assert executor.stopped == [store.get_run(number).id]
    assert store.get_run(number).status is RunStatus.STARTING  # its supervisor records how it ended
    a.tick()
    assert len(executor.stopped) == 1  # signalled once


def test_higher_priority_starts_first(store: SqlStore, settings: Settings) -> None:
    a, executor = agent(store, settings, slots=1)
    low, high = queue(store, priority=0), queue(store, priority=5)
    a.tick()
    assert started(executor) == [high]
    assert store.get_run(low).status is RunStatus.QUEUED


def test_a_scheduler_starts_and_counts_only_the_runs_of_its_executor(store: SqlStore, settings: Settings) -> None:
    # One agent, two executors: each scheduler claims the queued runs sent to it (runyard run --on),
    # leaves the others queued for theirs, and counts only its own against its slots.
    here, local = agent(store, settings, name="a", slots=1)
    there, other = agent(store, settings, name="a", slots=1, executor_name="cluster")
    for_cluster = queue(store, executor="cluster")
    for_here = queue(store)
    from_before = queue(store, executor=None)  # queued before runs named their executor: this machine's
    assert here.tick() == (1, 1)
    assert started(local) == [for_here]
    assert store.get_run(for_cluster).status is RunStatus.QUEUED
    assert there.tick() == (1, 0)  # the local run it does not count: its one slot is free
    assert started(other) == [for_cluster]
    assert other.specs[0].executor == "cluster"
    assert here.tick() == (0, 1)  # its slot is taken by its own run, not by the cluster's
    store.update_run(for_here, _finished())
    assert here.tick() == (1, 0)
    assert started(local) == [for_here, from_before]


def test_a_cluster_that_grows_takes_more_runs_once_measured_again(store: SqlStore, settings: Settings) -> None:
    # A cluster's executor says what it offers now (nodes come and go; a head just started reports
    # nothing yet): the scheduler asks again every few seconds, and tells other agents.
    class Cluster(RecordingExecutor):
        def __init__(self) -> None:
            super().__init__("cluster")
            self.offers = Machine("ray", 8, 1, 8, 16 * GIB, "cluster")

        def machine(self) -> Machine:
            return self.offers

    executor = Cluster()
    scheduler = Scheduler(store, settings, executor, 1, agent="a-cluster", machine=executor.offers)
    runs = [queue(store, executor="cluster", gpus=1) for _ in range(3)]
    assert scheduler.tick() == (1, 2)
    executor.offers = Machine("ray", 8, 3, 8, 16 * GIB, "cluster")  # two more GPUs joined
    assert scheduler.tick() == (0, 2)  # measured every few seconds, not at every tick
    scheduler._measured = scheduler._renewed = -float("inf")
    assert scheduler.tick() == (2, 0)
    assert started(executor) == runs
    lease, _ = next(iter(store.leases("agent:a-cluster")))
    assert lease.info["gpus"] == 3


class Cluster(RecordingExecutor):
    """A cluster's executor: what it offers and what is in use on it, as its last report says."""

    def __init__(self, offers: Machine) -> None:
        super().__init__(offers.executor)
        self.offers = offers

    def machine(self) -> Machine:
        return self.offers


def _measure_now(scheduler: Scheduler, executor: Cluster, used_gpus: int, at: float) -> None:
    import dataclasses

    executor.offers = dataclasses.replace(executor.offers, used=(used_gpus, 0, 0), measured_at=at)
    scheduler._measured = -float("inf")


def test_a_run_that_fits_the_cluster_in_all_but_no_node_of_it_fails_at_once(store: SqlStore,
                                                                              settings: Settings) -> None:
    # Four GPUs on two nodes of two: a job runs on one node, so a three-GPU run would wait in the
    # cluster's queue forever.
    two_nodes = Machine("ray", 16, 4, 16, 32 * GIB, "cluster", nodes=((2, 8, 16 * GIB), (2, 8, 16 * GIB)))
    executor = Cluster(two_nodes)
    scheduler = Scheduler(store, settings, executor, 4, agent="a-cluster", machine=two_nodes)
    too_big, fits = queue(store, executor="cluster", gpus=3), queue(store, executor="cluster", gpus=2)
    assert scheduler.tick() == (1, 0)
    assert started(executor) == [fits]
    failed = store.get_run(too_big)
    assert failed.status is RunStatus.FAILED
    assert "3 GPU(s), 0 cores and 0 bytes on one node" in (failed.status_message or "")
    assert "2 GPU(s) + 8 cores + 16.0 GiB" in (failed.status_message or "")


def test_runs_wait_in_runyards_queue_while_other_work_holds_the_clusters_gpus(store: SqlStore,
                                                                               settings: Settings) -> None:
    import time

    from runyard.store.api import RunPatch

    offers = Machine("ray", 8, 2, 8, 16 * GIB, "cluster", nodes=((2, 8, 16 * GIB),))
    executor = Cluster(offers)
    scheduler = Scheduler(store, settings, executor, 2, agent="a-cluster", machine=offers)
    t0 = time.time() - 60  # the cluster's reports below are from the last minute
    _measure_now(scheduler, executor, used_gpus=1, at=t0)  # someone else's job holds a GPU
    first, second, third = (queue(store, executor="cluster", gpus=1) for _ in range(3))
    assert scheduler.tick() == (1, 2)  # one GPU is free, not two
    store.update_run(first, RunPatch(status=RunStatus.RUNNING, started_at=t0 + 1))
    # The next report counts our run and the other job: nothing free.
    _measure_now(scheduler, executor, used_gpus=2, at=t0 + 2)
    assert scheduler.tick() == (0, 2)
    # The other job ended: only ours holds a GPU.
    _measure_now(scheduler, executor, used_gpus=1, at=t0 + 3)
    assert scheduler.tick() == (1, 1)
    assert started(executor) == [first, second]
    # Ours ended after the cluster last reported: the GPU it held then is ours, not other work's.
    store.update_run(second, RunPatch(status=RunStatus.RUNNING, started_at=t0 + 4))
    _measure_now(scheduler, executor, used_gpus=2, at=t0 + 5)
    store.update_run(first, RunPatch(status=RunStatus.FINISHED, ended_at=time.time()))
    assert scheduler.tick() == (1, 0)
    assert started(executor) == [first, second, third]


def test_a_cluster_run_whose_agent_went_away_is_taken_over_while_its_job_runs(
        store: SqlStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The agent that sent two runs to a cluster dies for good. Another home's agent serving the same
    # cluster finds one job still running there and takes the run over; the other's job is gone, so
    # that run is lost. Its local scheduler leaves both to the cluster's scheduler.
    from runyard.exec import scheduler as scheduling
    from runyard.store.api import RunPatch

    settings = resolve(environ={"RUNYARD_HOME": str(tmp_path / "home"), "RUNYARD_LEASE": "30",
                                "RUNYARD_RAY": "http://127.0.0.1:8265"}, cwd=tmp_path)
    clock = [1000.0]
    store.clock = lambda: clock[0]
    monkeypatch.setattr(scheduling.time, "monotonic", lambda: clock[0])
    offers = Machine("ray", 8, 2, 8, 16 * GIB, "ray")
    gone_cluster = Cluster(offers)
    gone = Scheduler(store, settings, gone_cluster, 2, agent="gone", machine=offers)
    still, ended = queue(store, executor="ray", gpus=1), queue(store, executor="ray", gpus=1)
    assert gone.tick() == (2, 0)
    for number in (still, ended):
        store.update_run(number, RunPatch(status=RunStatus.RUNNING, started_at=clock[0]))
    b_cluster = Cluster(offers)
    b_cluster.running = {store.get_run(still).id}  # the cluster still runs one of the two jobs
    b_local, _ = agent(store, settings, "b-local")
    b = Scheduler(store, settings, b_cluster, 2, agent="b-cluster", machine=offers)
    clock[0] += settings.lease + 1
    b_local.tick()  # before b's cluster scheduler first renews its lease: it is live...
    b.tick()
    clock[0] += settings.lease / 3
    b_local.tick()  # ...so b's local scheduler leaves the cluster's runs to it
    b.tick()
    assert store.get_run(still).status is RunStatus.RUNNING
    assert [run.number for run, _ in store.held_by("b-cluster")] == [still]
    lost = store.get_run(ended)
    assert lost.status is RunStatus.LOST and "stopped renewing its lease" in (lost.status_message or "")
    # b now stops the run it took over on the cluster.
    store.request_stop(still)
    b.tick()
    assert b_cluster.stopped == [store.get_run(still).id]


def test_a_run_whose_supervisor_the_executor_says_ended_is_lost_unless_its_end_arrived(
        store: SqlStore, settings: Settings) -> None:
    # A cluster's job can end without its run recording how (its node died, it was killed): the
    # executor says so, and the scheduler marks the run lost with the executor's words. A run whose
    # end record arrived meanwhile keeps the status it recorded.
    from runyard.store.api import RunPatch

    class Ending(Cluster):
        def __init__(self, offers: Machine) -> None:
            super().__init__(offers)
            self.ends: dict[str, str] = {}

        def ended(self, run_id: str) -> str | None:
            return self.ends.get(run_id)

    offers = Machine("ray", 8, 2, 8, 16 * GIB, "cluster")
    executor = Ending(offers)
    scheduler = Scheduler(store, settings, executor, 2, agent="a-cluster", machine=offers)
    heard: list[tuple[int, str, str]] = []
    scheduler.on_status = lambda number, status, message: heard.append((number, status, message))
    died, finished = queue(store, executor="cluster", gpus=1), queue(store, executor="cluster", gpus=1)
    assert scheduler.tick() == (2, 0)
    for number in (died, finished):
        store.update_run(number, RunPatch(status=RunStatus.RUNNING, started_at=1.0))
    assert scheduler.tick() == (0, 0) and scheduler.holding == 2  # nothing ended yet
    executor.ends = {store.get_run(died).id: "the Ray job FAILED: node died",
                     store.get_run(finished).id: "the Ray job SUCCEEDED"}
    store.update_run(finished, RunPatch(status=RunStatus.FINISHED, exit_code=0, ended_at=2.0))
    scheduler.tick()
    lost = store.get_run(died)
    assert lost.status is RunStatus.LOST
    assert lost.status_message == ("its supervisor ended without recording how the run ended: "
                                   "the Ray job FAILED: node died")
    assert heard == [(died, "lost", lost.status_message)]
    assert store.get_run(finished).status is RunStatus.FINISHED
    assert scheduler.holding == 0
