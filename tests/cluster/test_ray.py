"""Runs on a real Ray cluster (`runyard run --on ray`), queued through a real server on PostgreSQL.

The cluster is a Ray head on loopback with two fake GPUs. The server's agent sends runs to it as
Ray jobs; each job's supervisor runs in a home of its own on the "node", reads its code from the
server and ships its records there. The laptop is a client home that only knows the server.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.cluster.conftest import RayHead
from tests.flow.test_lab_proxy import run_cell
from tests.unit.server.conftest import LiveServer, client_env, home_env, migrate_postgres

pytestmark = [pytest.mark.engines("postgresql"), pytest.mark.timeout(600)]

TRAIN = """
    import os, sys, time
    import runyard

    run = runyard.init()
    os.makedirs("outputs", exist_ok=True)
    with open("outputs/gpus.txt", "w") as f:
        f.write(os.environ.get("CUDA_VISIBLE_DEVICES", ""))
    run.log({"loss": 0.5}, step=1)
    print("trained on", os.environ.get("CUDA_VISIBLE_DEVICES"), flush=True)
    time.sleep(float(sys.argv[1]) if len(sys.argv) > 1 else 1.0)
"""


@dataclass
class Cluster:
    server: LiveServer
    laptop: dict[str, str]
    project: Path
    ray: RayHead

    def runyard(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([sys.executable, "-m", "runyard.cli.main", *args], env=self.laptop,
                                cwd=self.project, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"runyard {' '.join(args)} -> {result.returncode}\n{result.stdout}\n{result.stderr}")
        return result

    def launch(self, *args: str) -> int:
        return int(json.loads(self.runyard("run", "--json", "--on", "ray", *args).stdout)["number"])

    def run(self, number: int) -> dict[str, object]:
        return dict(json.loads(self.runyard("show", "--json", str(number)).stdout))

    def wait(self, numbers: list[int], wanted: set[str], timeout: float = 300) -> dict[int, dict[str, object]]:
        deadline = time.monotonic() + timeout
        while True:
            runs = {n: self.run(n) for n in numbers}
            if all(r["status"] in wanted for r in runs.values()):
                return runs
            if time.monotonic() > deadline:
                raise AssertionError(f"runs not {wanted} after {timeout:g} s: "
                                     f"{ {n: r['status'] for n, r in runs.items()} }\n{self.server_log()}")
            time.sleep(1.0)

    def server_log(self) -> str:
        logs = [self.server.log] if self.server.log else []
        logs += list((self.server.home / "agent").glob("*.log"))
        return "\n".join(f"--- {p}\n{p.read_text()[-3000:]}" for p in logs if p.exists())


@pytest.fixture
def cluster(ray_head: RayHead, db_url: str, tmp_path: Path) -> Iterator[Cluster]:
    from runyard import credential

    migrate_postgres(db_url)
    server = LiveServer(tmp_path / "server-home", db_url, insecure_local=False)
    server.env = {"RUNYARD_RAY": ray_head.address, "RUNYARD_NODE_SERVER": server.url, "RUNYARD_SLOTS": "1"}
    server.start()
    token = credential.read_local(server.home)
    assert token is not None
    project = tmp_path / "project"
    project.mkdir()
    (project / "train.py").write_text(textwrap.dedent(TRAIN))
    try:
        yield Cluster(server, client_env(tmp_path / "laptop", server.url, token), project, ray_head)
    finally:
        server.kill()


def _most_at_once(runs: list[dict[str, object]]) -> int:
    edges = sorted([(float(r["started_at"]), 1) for r in runs] + [(float(r["ended_at"]), -1) for r in runs])
    most = now = 0
    for _, change in edges:
        now += change
        most = max(most, now)
    return most


def test_queued_gpu_runs_go_through_a_two_gpu_cluster_two_at_a_time_each_once(cluster: Cluster,
                                                                              tmp_path: Path) -> None:
    numbers = [cluster.launch("--gpus", "1", "--", "python", "train.py", "2") for _ in range(20)]
    assert "queued on ray" in cluster.runyard("ps").stdout
    runs = cluster.wait(numbers, {"finished", "failed", "lost", "stopped"})
    assert {n: r["status"] for n, r in runs.items()} == dict.fromkeys(numbers, "finished"), cluster.server_log()
    # Two GPUs: never more than two at once, although the server's own machine has one slot and no GPU.
    assert _most_at_once(list(runs.values())) == 2
    # Each started exactly once: one Ray job per run.
    jobs = [j["submission_id"] for j in cluster.ray.jobs() if str(j["submission_id"]).startswith("runyard-")]
    assert sorted(jobs) == sorted(f"runyard-{r['id']}" for r in runs.values())
    for number in numbers:
        # Its output came back through the server, and Ray gave it one GPU of its own.
        out = tmp_path / f"gpus-{number}.txt"
        cluster.runyard("cp", f"{number}:outputs/gpus.txt", str(out))
        assert out.read_text() in ("0", "1")
        logs = cluster.runyard("logs", str(number)).stdout
        assert "trained on" in logs
        metrics = {s["key"]: s["last_value"] for s in runs[number]["metrics"]}  # type: ignore[attr-defined]
        assert metrics == {"loss": 0.5}, metrics
        assert runs[number]["executor"] == "ray"
    # The tokens made for the runs' jobs are revoked once the runs ended.
    from runyard.config import resolve
    from runyard.store.home import open_store
    from runyard.store.tokens import Tokens

    settings = resolve(environ={**home_env(cluster.server.home, cluster.server.db_url), **cluster.server.env})
    deadline = time.monotonic() + 60
    while True:
        opened = open_store(settings)
        try:
            left = [t.name for t in Tokens(opened.store).list() if t.name.startswith("ray run ")]
        finally:
            opened.close()
        if not left or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert left == []
    # runyard doctor on the server's machine says what the cluster offers.
    doctor = subprocess.run([sys.executable, "-m", "runyard.cli.main", "doctor", "--json"], capture_output=True,
                            text=True, env={**home_env(cluster.server.home, cluster.server.db_url),
                                            **cluster.server.env}, timeout=60)
    ray = next(c for c in json.loads(doctor.stdout)["checks"] if c["name"] == "ray")
    assert ray["status"] == "ok" and "2 GPU(s), 4 CPU cores" in ray["detail"], ray


def test_stop_stops_a_run_on_the_cluster_and_a_killed_supervisor_marks_its_run_lost(cluster: Cluster) -> None:
    stopped = cluster.launch("--gpus", "1", "--", "python", "train.py", "600")
    killed = cluster.launch("--gpus", "1", "--", "python", "train.py", "600")
    cluster.wait([stopped, killed], {"running"})
    cluster.runyard("stop", str(stopped))
    ended = cluster.wait([stopped], {"stopped", "failed", "finished", "lost"}, timeout=60)[stopped]
    assert ended["status"] == "stopped", (ended["status_message"], cluster.runyard("logs", str(stopped)).stdout[-3000:])
    # The node's supervisor dies (its machine goes away): Ray's job fails, and the run is lost.
    run_id = str(cluster.run(killed)["id"])
    pids = [int(p) for p in os.listdir("/proc") if p.isdigit() and _is_node_supervisor(int(p), run_id)]
    assert pids, "no supervisor process of the run on the node"
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    final = cluster.wait([killed], {"lost", "failed", "finished", "stopped"}, timeout=120)[killed]
    # Whichever sees it first says so: the node's agent (the supervisor's spool writer died) or the
    # server's (Ray says the job failed).
    assert final["status"] == "lost", final
    assert any(why in str(final["status_message"]) for why in ("Ray job", "stopped without finishing")), final


def test_a_jupyterlab_on_a_ray_node_opens_through_the_server_and_keeps_its_files(cluster: Cluster) -> None:
    """`runyard notebook --on ray` through the server: JupyterLab starts on a node, the node's supervisor
    tells the server where it answers, and the link `runyard notebook` prints opens it through the
    server's lab origin, HTTP and a kernel's websocket; a stop keeps its files as the run's outputs."""
    import httpx

    started = json.loads(cluster.runyard("notebook", "--on", "ray", "--gpus", "1", "--idle", "10m", "--wait", "240",
                                         "--json", timeout=300).stdout)
    number, url = int(started["number"]), started["url"]
    assert url, (started, cluster.server_log())
    run = cluster.run(number)
    assert run["executor"] == "ray" and run["kind"] == "jupyterlab"
    opened = httpx.get(url, timeout=10)
    assert opened.status_code == 303, opened.text
    lab = url.split("/lab/", 1)[0]
    base = f"{lab}/lab/{run['id']}"
    jar = {"runyard_lab": opened.cookies["runyard_lab"]}
    listing = httpx.get(f"{base}/api/contents", cookies=jar, timeout=30)
    assert listing.status_code == 200 and "train.py" in {i["name"] for i in listing.json()["content"]}
    made = httpx.put(f"{base}/api/contents/notes.txt", cookies=jar, headers={"origin": lab}, timeout=30,
                     json={"type": "file", "format": "text", "content": "written on the node"})
    assert made.status_code in (200, 201), made.text
    # A cell runs over the kernel's websocket through the lab origin, and sees the GPU Ray gave the run.
    kernel = httpx.post(f"{base}/api/kernels", cookies=jar, headers={"origin": lab}, json={}, timeout=60)
    assert kernel.status_code == 201, kernel.text
    channels = f"{base.replace('http://', 'ws://', 1)}/api/kernels/{kernel.json()['id']}/channels"
    seen = run_cell(channels, f"Cookie: runyard_lab={jar['runyard_lab']}", lab,
                    "import os; print(os.environ.get('CUDA_VISIBLE_DEVICES'))")
    assert seen in ("0", "1"), seen
    cluster.runyard("stop", str(number))
    ended = cluster.wait([number], {"stopped", "failed", "finished", "lost"}, timeout=120)[number]
    assert ended["status"] == "stopped", ended
    assert httpx.get(f"{base}/api/status", cookies=jar, timeout=10).status_code == 410
    out = Path(cluster.project) / "notes-back.txt"
    cluster.runyard("cp", f"{number}:notes.txt", str(out))
    assert out.read_text() == "written on the node"


def _is_node_supervisor(pid: int, run_id: str) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    return b"runyard.exec.node" in cmdline and run_id.encode() in environ


def test_pip_runs_on_a_node_share_its_environment_and_leave_no_home_behind(cluster: Cluster) -> None:
    (cluster.project / "probe.py").write_text("import termcolor\nprint('termcolor from', termcolor.__file__)\n")
    # An environment on the node that no run used for 31 days: the jobs' clean-up removes it.
    from runyard.exec.venvs import READY

    stale = cluster.ray.temp_dir / "node-cache" / "envs" / "0123456789abcdef-stale"
    (stale / "lib").mkdir(parents=True)
    (stale / READY).touch()
    month_ago = time.time() - 31 * 86400
    for path in (stale / READY, stale / "lib", stale):
        os.utime(path, (month_ago, month_ago))
    first = cluster.launch("--pip", "termcolor", "--", "python", "probe.py")
    assert cluster.wait([first], {"finished", "failed", "lost", "stopped"})[first]["status"] == "finished"
    second = cluster.launch("--pip", "termcolor", "--", "python", "probe.py")
    assert cluster.wait([second], {"finished", "failed", "lost", "stopped"})[second]["status"] == "finished"
    first_log, second_log = (cluster.runyard("logs", str(n)).stdout for n in (first, second))
    assert "building a package environment" in first_log and "termcolor from" in first_log, first_log
    assert "reusing the package environment" in second_log, second_log
    # Once a job's records are on the server, its home on the node goes (the environments stay).
    homes = [Path(re.search(rf"in ({re.escape(str(cluster.ray.temp_dir))}/runyard-node-[^/]+)/", log)[1])  # type: ignore[index]
             for log in (first_log, second_log)]
    deadline = time.monotonic() + 30
    while any(home.exists() for home in homes) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not any(home.exists() for home in homes), homes
    kept = list((cluster.ray.temp_dir / "node-cache" / "envs").iterdir())
    assert kept and stale not in kept, kept


def test_runs_wait_in_runyards_queue_by_priority_while_other_work_holds_a_gpu(cluster: Cluster) -> None:
    # Someone else's Ray job holds one of the two GPUs. Runs beyond the free one would wait in Ray's
    # own queue, first come first served; they wait in runyard's, where priorities count.
    from ray.job_submission import JobStatus, JobSubmissionClient

    jobs = JobSubmissionClient(cluster.ray.address)
    deadline = time.monotonic() + 60
    while True:
        try:  # a head just started may have no job agent yet
            other = jobs.submit_job(entrypoint="sleep 120", entrypoint_num_gpus=1)
            break
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
    try:
        while jobs.get_job_status(other) != JobStatus.RUNNING:
            assert time.monotonic() < deadline, jobs.get_job_logs(other)
            time.sleep(0.5)
        first = cluster.launch("--gpus", "1", "--", "python", "train.py", "25")
        cluster.wait([first], {"running"}, timeout=120)
        low = cluster.launch("--gpus", "1", "--priority", "0", "--", "python", "train.py", "1")
        time.sleep(8)  # several scheduler passes and cluster reports: `low` must not be sent meanwhile
        assert cluster.run(low)["status"] == "queued", cluster.server_log()
        high = cluster.launch("--gpus", "1", "--priority", "10", "--", "python", "train.py", "1")
        runs = cluster.wait([first, low, high], {"finished", "failed", "lost", "stopped"}, timeout=180)
        assert {n: r["status"] for n, r in runs.items()} == dict.fromkeys(runs, "finished"), cluster.server_log()
        # While the other job held its GPU, ours ran one at a time, the higher priority first.
        assert float(runs[high]["started_at"]) < float(runs[low]["started_at"])  # type: ignore[arg-type]
        assert _most_at_once(list(runs.values())) == 1
    finally:
        jobs.stop_job(other)
