"""A run's supervisor on a machine without the home: what a Ray job runs (``runyard.exec.ray``).

The job's environment holds the run's launch spec (``RUNYARD_NODE_SPEC``, JSON), the runyard server
(``RUNYARD_SERVER``) and a token made for this run (``RUNYARD_TOKEN``). The supervisor is the same
as on the submitter's machine; only where things are differs:

- its home is a fresh directory on the node (the spool, the run's working directory), removed once
  its records are shipped; its ``--pip`` environments are the node's (``RUNYARD_NODE_CACHE``,
  default ~/.cache/runyard/node), built once per requirement set and shared by the runs on it;
  each job, once done, removes the ones no run used for ``RUNYARD_NODE_ENV_DAYS`` days (default 30,
  as ``runyard gc --env-days``), so that a long-lived node's disk does not fill up with them;
- its code and mounts come from the server's content (``client.ServerBlobs``), never from a disk
  the node does not have, and the outputs it keeps go there;
- its records, and the command's (the SDK attaches to the run), ship to the server through this
  home's agent, exactly as a remote client's do; the job ends only once they are all shipped, so
  a node given back to the cluster takes nothing with it.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from runyard.exec.spec import LaunchSpec
    from runyard.notebook.announce import Announcer

#: The launch spec's variable in the job's environment.
ENV_SPEC = "RUNYARD_NODE_SPEC"
#: Where a node keeps what outlives a run: its package environments (``envs/``).
ENV_CACHE = "RUNYARD_NODE_CACHE"
#: Days a node keeps a package environment no run used (``runyard gc --env-days`` at home).
ENV_DAYS = "RUNYARD_NODE_ENV_DAYS"
DEFAULT_ENV_DAYS = 30.0
#: Seconds the job waits, once the command ended, for its records to reach the server (which may
#: be down for a while: the agent retries) before it gives up and says what is left.
SHIP_WAIT = 600.0


def main() -> int:
    from runyard.client import Client, ServerBlobs
    from runyard.config import resolve
    from runyard.exec.environment import inherited
    from runyard.exec.spec import LaunchSpec
    from runyard.exec.supervisor import Supervisor
    from runyard.sdk.agent_launch import ensure_agent
    from runyard.spool.rundir import target_key, waiting_for_catch_up

    text, server, token = (os.environ.get(k, "") for k in (ENV_SPEC, "RUNYARD_SERVER", "RUNYARD_TOKEN"))
    if not (text and server and token):
        print(f"runyard node: {ENV_SPEC}, RUNYARD_SERVER and RUNYARD_TOKEN must be set (this is what a Ray job "
              "started by runyard's Ray executor runs)", file=sys.stderr)
        return 2
    home = Path(tempfile.mkdtemp(prefix="runyard-node-"))
    cache = Path(os.environ.get(ENV_CACHE) or Path.home() / ".cache" / "runyard" / "node")
    (cache / "envs").mkdir(parents=True, exist_ok=True)
    (home / "envs").symlink_to(cache / "envs", target_is_directory=True)  # built under a lock: shared safely
    settings = resolve(environ={"RUNYARD_HOME": str(home), "RUNYARD_SERVER": server, "RUNYARD_TOKEN": token},
                       cwd=home)
    # The submitter's shell is on another machine: the command runs with this node's environment.
    spec = dataclasses.replace(LaunchSpec.from_json(text), home=str(home), server=server,
                               environment=inherited(os.environ), site_packages=[])
    announcer = None
    if spec.kind == "jupyterlab":
        announcer = _lab_on_node(spec, home, server, token)
    client = Client(server, token)
    try:
        supervisor = Supervisor(spec, ServerBlobs(client))
        ensure_agent(settings)
        if announcer is not None:
            announcer.start()
        code = supervisor.run()
    finally:
        if announcer is not None:
            announcer.stop()
        client.close()
    deadline = time.monotonic() + SHIP_WAIT
    while waiting_for_catch_up(settings.spool_dir, target_key(settings)):
        if time.monotonic() > deadline:
            print(f"runyard node: records of run {spec.number} are still not on {server} after {SHIP_WAIT:g} s; "
                  f"they are in {settings.spool_dir} on this node", file=sys.stderr)
            return 1
        ensure_agent(settings)  # an agent that idled out or died meanwhile
        time.sleep(0.5)
    import shutil

    from runyard.sdk.agent_launch import stop_agents

    stop_agents(home)
    shutil.rmtree(home, ignore_errors=True)  # everything is on the server; the envs link goes, not the envs
    _prune_environments(cache)
    return code


def _lab_on_node(spec: LaunchSpec, home: Path, server: str, token: str) -> Announcer:
    """A JupyterLab run answers on this node's address toward the server (the server is its only
    client: it proxies teammates to it with JupyterLab's token), and the server is told where."""
    from runyard.client import Client
    from runyard.notebook.announce import Announcer, address_toward
    from runyard.notebook.connection import LAB_IP, read_connection

    os.environ[LAB_IP] = address_toward(server)  # the supervisor (this process) hands it to labrun
    announcing = Client(server, token)  # its own: the supervisor's client is not shared across threads

    def send(path: str, body: dict[str, object]) -> None:
        announcing.request("POST", path, json=body)

    return Announcer(spec.run_id, lambda: read_connection(home, spec.run_id), send)


def _prune_environments(cache: Path) -> None:
    """Remove the node's package environments that no run used for a while (never one in use)."""
    from runyard.exec.reclaim import remove_stale_environments

    try:
        days = float(os.environ.get(ENV_DAYS) or DEFAULT_ENV_DAYS)
    except ValueError:
        print(f"runyard node: {ENV_DAYS} must be a number of days; keeping every environment", file=sys.stderr)
        return
    try:
        for env, size in remove_stale_environments(cache, days):
            print(f"runyard node: removed the package environment {env.name} ({size / 2**20:.0f} MiB), "
                  f"unused for {days:g} days", file=sys.stderr)
    except OSError as e:  # the run is done and shipped: a cleanup that fails is tried by the next job
        print(f"runyard node: could not clean {cache / 'envs'}: {e}", file=sys.stderr)


if __name__ == "__main__":
    raise SystemExit(main())
