"""RayExecutor: runs go to a Ray cluster as Ray jobs (``runyard run --on ray``).

A run's job is its supervisor (``runyard.exec.node``), submitted through Ray's Jobs API with the
run's GPUs, CPU cores and memory as the job's entrypoint resources, so Ray places it on a node that
has them and gives it those GPUs (CUDA_VISIBLE_DEVICES). The node does not share the submitter's
home: the job gets the run's launch spec, the runyard server as the nodes reach it (the
``node_server`` setting) and a writer token made for this run alone (limited to its project,
revoked once the run ended), and reads its code from the server, which it ships its records to.

The queue still decides what starts: the agent schedules Ray runs against what the cluster has
free (``machine``: its GPUs, CPU cores and memory, its nodes' sizes and what other work takes, from
the dashboard), the runs it sent there counted, so that runs wait in runyard's queue, by priority,
not in Ray's; a run no node could hold fails at once with the reason.
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import TYPE_CHECKING, Any

from runyard.errors import ConfigError

if TYPE_CHECKING:
    from runyard.config import Settings
    from runyard.exec.scheduler import Machine
    from runyard.exec.spec import LaunchSpec
    from runyard.store.artifacts import ArtifactStore
    from runyard.store.sql import SqlStore

#: What a job runs: runyard must be installed in the Python that nodes find on their PATH.
ENTRYPOINT = "python -m runyard.exec.node"
#: Name of the token a Ray run's job holds (``runyard token list`` shows them while they live).
TOKEN_PREFIX = "ray run "  # noqa: S105 - a name
#: Ray's job states in which the supervisor is still to run or running.
_LIVE = ("PENDING", "RUNNING")


def job_id(run_id: str) -> str:
    return f"runyard-{run_id}"


def jobs_address(settings: Settings) -> str:
    """The Jobs API (the dashboard's HTTP address) of the ``ray`` setting; ConfigError if unusable."""
    address = settings.ray
    if not address:
        raise ConfigError("runs on Ray need the cluster's address: set ray = \"http://HEAD:8265\" (RUNYARD_RAY), "
                          "the address of its dashboard, which serves the Jobs API")
    if not address.startswith(("http://", "https://")):
        raise ConfigError(f"ray = {address!r}: runyard submits runs through Ray's Jobs API, so it needs the "
                          "dashboard's HTTP address, e.g. http://HEAD:8265")
    return address.rstrip("/")


def machine_of(host: str, status: dict[str, Any], executor: str = "ray") -> Machine:
    """A Machine from the ``clusterStatus`` of Ray's ``/api/cluster_status``: the totals, each
    node's size (``usageByNode``: resource -> [used, total]) and the use when it was reported."""
    from runyard.exec.scheduler import Machine

    metrics = status["loadMetricsReport"]
    usage = metrics["usage"]
    total = {name: float(pair[1]) for name, pair in usage.items()}
    cpus = int(total.get("CPU", 0))
    if cpus == 0:  # a head just started has not reported its own resources yet
        raise ConfigError(f"the Ray cluster at {host.removeprefix('ray ')} reports no nodes yet")
    nodes = tuple(
        (int(node.get("GPU", (0, 0))[1]), int(node.get("CPU", (0, 0))[1]), int(node.get("memory", (0, 0))[1]))
        for node in (metrics.get("usageByNode") or {}).values()
    )

    def used(name: str) -> int:
        return math.ceil(float(usage.get(name, (0, 0))[0]))

    # The slots setting is this machine's; on a cluster, runs wait for GPUs, cores and memory.
    return Machine(host, max(1, cpus), int(total.get("GPU", 0)), cpus, int(total.get("memory", 0)),
                   executor=executor, nodes=nodes, used=(used("GPU"), used("CPU"), used("memory")),
                   measured_at=float(status.get("time") or time.time()))


class RayExecutor:
    name = "ray"

    def __init__(self, settings: Settings, store: SqlStore | None = None,
                 artifacts: ArtifactStore | None = None) -> None:
        """``store`` and ``artifacts``: the agent's, to make the run's token and let its project read
        the run's code (only ``submit`` needs them; stopping a run does not)."""
        self.settings = settings
        self.address = jobs_address(settings)
        self.store = store
        self.artifacts = artifacts
        self._jobs: Any = None

    @property
    def jobs(self) -> Any:
        if self._jobs is None:
            from ray.job_submission import JobSubmissionClient

            self._jobs = JobSubmissionClient(self.address)
        return self._jobs

    # -- what the cluster has ----------------------------------------------------------------------

    def machine(self) -> Machine:
        """The cluster as one machine: its GPUs, CPU cores and memory, its nodes' sizes and what
        is in use on it (Ray's cluster status, as its autoscaler monitor last reported it)."""
        import httpx

        try:
            report = httpx.get(f"{self.address}/api/cluster_status", timeout=10.0).json()
            status = report["data"]["clusterStatus"]
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as e:
            raise ConfigError(f"no Ray cluster answers at {self.address} ({type(e).__name__}: {e})") from None
        try:
            return machine_of(f"ray {self.address}", status, self.name)
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise ConfigError(f"the Ray cluster at {self.address} sent a status runyard cannot read "
                              f"({type(e).__name__}: {e})") from None

    # -- the Executor protocol ---------------------------------------------------------------------

    def submit(self, spec: LaunchSpec) -> None:
        import dataclasses

        server = self.settings.node_server
        if not server:
            raise ConfigError("runs on Ray ship their records to a runyard server the nodes can reach: set "
                              "node_server = \"http://HOST:PORT\" (RUNYARD_NODE_SERVER) on the machine whose agent "
                              "sends runs to Ray")
        if self.store is None:
            raise RuntimeError("RayExecutor.submit needs the agent's store")  # a programming error
        from runyard.exec.node import ENV_SPEC
        from runyard.store.tokens import Tokens

        project = self.store.get_run(spec.number).project
        self._share_code(project, spec)
        _, token = Tokens(self.store).create("writer", f"{TOKEN_PREFIX}{spec.number}", project=project)
        # The node counts no GPU indices of ours: Ray gives the job its GPUs.
        sent = dataclasses.replace(spec, gpus=[], home="", db="", artifacts="", s3_endpoint=None)
        self.jobs.submit_job(
            entrypoint=ENTRYPOINT, submission_id=job_id(spec.run_id),
            runtime_env={"env_vars": {ENV_SPEC: sent.to_json(), "RUNYARD_SERVER": server, "RUNYARD_TOKEN": token}},
            metadata={"runyard_run": str(spec.number)},
            entrypoint_num_gpus=len(spec.gpus) or None, entrypoint_num_cpus=spec.cpus or None,
            entrypoint_memory=spec.memory or None,
        )

    def _share_code(self, project: str, spec: LaunchSpec) -> None:
        """The run's token is limited to its project: let the project read the run's code and the
        files mounted into it (uploaded by whoever submitted it), as the node reads them."""
        from runyard.exec.snapshot import manifest_of
        from runyard.store.artifacts import sha_of_ref

        assert self.store is not None and self.artifacts is not None
        shas = {sha_of_ref(spec.snapshot_id)}
        shas.update(sha for sha, _ in manifest_of(spec.snapshot_id, self.artifacts).values())
        shas.update(sha for mount in spec.mounts for _, sha in mount.files)
        for sha in shas:
            self.store.grant_content(project, sha)

    def _status(self, run_id: str) -> tuple[str, str] | None:
        """(Ray's job status, its message); None if Ray has no such job."""
        try:
            info = self.jobs.get_job_info(job_id(run_id))
        except RuntimeError as e:  # the Jobs API answers 404 with a RuntimeError
            if "does not exist" in str(e) or "404" in str(e):
                return None
            raise
        return str(getattr(info.status, "value", info.status)), str(info.message or "")

    def submitted(self, run_id: str) -> bool:
        try:
            return self._status(run_id) is not None
        except Exception:  # noqa: BLE001 - the cluster unreachable: assume it was, never start it twice
            return True

    def alive(self, run_id: str) -> bool:
        try:
            status = self._status(run_id)
        except Exception:  # noqa: BLE001 - unreachable for now: not a reason to give the run up
            return True
        return status is not None and status[0] in _LIVE

    def placed(self, run_id: str) -> bool:
        """Whether Ray has given the run's job its resources (it is no longer pending)."""
        try:
            status = self._status(run_id)
        except Exception:  # noqa: BLE001 - unreachable for now: not known to be placed
            return False
        return status is not None and status[0] != "PENDING"

    def ended(self, run_id: str) -> str | None:
        try:
            status = self._status(run_id)
        except Exception:  # noqa: BLE001 - unreachable for now: not known to have ended
            return None
        if status is None:
            return "Ray has no job for it (the cluster was restarted?)"
        if status[0] in _LIVE:
            return None
        return f"its Ray job {job_id(run_id)} is {status[0]}" + (f": {status[1]}" if status[1] else "")

    def stop(self, run_id: str) -> bool:
        """Stop the run's job (Ray sends its supervisor SIGTERM, which stops the command and records
        the run stopped); False if it is not running."""
        with contextlib.suppress(Exception):
            status = self._status(run_id)
            if status is not None and status[0] in _LIVE:
                return bool(self.jobs.stop_job(job_id(run_id)))
        return False

    def forget(self, store: SqlStore) -> None:
        """Revoke the tokens of Ray runs that ended, once their jobs did (a job ends only when its
        records are all shipped)."""
        from runyard.store.tokens import Tokens

        tokens = Tokens(store)
        for info in tokens.list():
            if not info.name.startswith(TOKEN_PREFIX):
                continue
            with contextlib.suppress(Exception):  # a run removed meanwhile, the cluster away: next time
                run = store.get_run(int(info.name.removeprefix(TOKEN_PREFIX)))
                if run.status.is_terminal() and not self.alive(run.id):
                    tokens.revoke(str(info.id))
