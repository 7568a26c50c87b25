"""bench/scale.py, section "ray": runs through a Ray cluster, against runs on the server's own machine.

    python bench/scale.py --sections ray           # a Ray head on loopback (2 fake GPUs), a runyard server
    python bench/scale.py --sections ray --quick   # fewer and shorter runs

Everything is real and on loopback: `ray start --head --num-gpus 2`, `runyard server` on a SQLite
home whose agent sends `--on ray` runs to the cluster (the `ray` and `node_server` settings), and a
client home that only knows the server. Figures:

- queue -> start latency (the run's queued time to its supervisor's start record), p50 and p95, of
  `runyard run --on ray -- python -c pass` beside the same run on the server's machine (`--on local`);
- the makespan of 20 runs of one GPU each that sleep S seconds, through the cluster's 2 GPUs, against
  the ideal (20 / 2 x S: the GPUs never idle and starting costs nothing).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.rayhead, as the tests stop a head
from tests.rayhead import stop_head

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update({"RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"})
    return env


def wait_http(url: str, timeout: float, ok: tuple[int, ...] = (200,)) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code in ok:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"nothing answered at {url} within {timeout:g} s")


class Setup:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.ray_tmp = Path("/tmp") / f"rybench{os.getpid()}"
        self.ray_tmp.mkdir(exist_ok=True)
        dashboard = free_port()
        started = subprocess.run(
            [str(BIN / "ray"), "start", "--head", "--port", str(free_port()), "--node-ip-address", "127.0.0.1",
             "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard), "--num-gpus", "2",
             "--num-cpus", "4", "--min-worker-port", "20000", "--max-worker-port", "20200",
             "--temp-dir", str(self.ray_tmp), "--disable-usage-stats"],
            env={**base_env(), "TMPDIR": str(self.ray_tmp)}, capture_output=True, text=True, timeout=180)
        if started.returncode != 0:
            raise SystemExit(f"ray start failed: {started.stderr[-2000:]}")
        self.ray = f"http://127.0.0.1:{dashboard}"
        wait_http(f"{self.ray}/api/jobs/", 120)
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        server_home = root / "server-home"
        self.server_env = {**base_env(), "RUNYARD_HOME": str(server_home), "RUNYARD_RAY": self.ray,
                           "RUNYARD_NODE_SERVER": self.url, "RUNYARD_SYSTEM_INTERVAL": "0", "RUNYARD_SLOTS": "2"}
        server_home.mkdir()
        self.log = (root / "server.log").open("ab")
        self.server = subprocess.Popen([str(BIN / "runyard"), "server", "--port", str(port)], env=self.server_env,
                                       stdout=self.log, stderr=self.log, start_new_session=True)
        wait_http(f"{self.url}/api/health", 60, (200, 401))
        token = (server_home / "local-token").read_text().strip()
        self.laptop = {**base_env(), "RUNYARD_HOME": str(root / "laptop"), "RUNYARD_SERVER": self.url,
                       "RUNYARD_TOKEN": token, "RUNYARD_SYSTEM_INTERVAL": "0"}
        self.project = root / "project"
        self.project.mkdir()
        (self.project / "hold.py").write_text("import sys, time\ntime.sleep(float(sys.argv[1]))\n")

    def runyard(self, *args: str) -> str:
        done = subprocess.run([str(BIN / "runyard"), *args], env=self.laptop, cwd=self.project, capture_output=True,
                              text=True, timeout=120)
        if done.returncode != 0:
            raise SystemExit(f"runyard {' '.join(args)}: {done.stderr}")
        return done.stdout

    def launch(self, *args: str) -> int:
        return int(json.loads(self.runyard("run", "--json", *args))["number"])

    def wait(self, numbers: list[int], timeout: float = 900) -> list[dict[str, object]]:
        deadline = time.monotonic() + timeout
        while True:
            runs = [json.loads(self.runyard("show", "--json", str(n))) for n in numbers]
            if all(r["status"] in ("finished", "failed", "lost", "stopped") for r in runs):
                bad = [(r["number"], r["status"], r["status_message"]) for r in runs if r["status"] != "finished"]
                if bad:
                    raise SystemExit(f"runs did not finish: {bad}")
                return runs
            if time.monotonic() > deadline:
                raise SystemExit("runs did not end in time")
            time.sleep(1.0)

    def close(self) -> None:
        import signal

        os.killpg(self.server.pid, signal.SIGTERM)
        self.server.wait(30)
        stop_head(self.ray_tmp)  # this head only: `ray stop` ends every Ray cluster of the machine
        shutil.rmtree(self.ray_tmp, ignore_errors=True)


def latencies(setup: Setup, executor: str, count: int) -> list[float]:
    """Queue -> start of runs sent one at a time (each waits for the last to end: no queueing)."""
    out = []
    for _ in range(count):
        number = setup.launch("--on", executor, "--", "python", "-c", "pass")
        run = setup.wait([number])[0]
        out.append(float(run["started_at"]) - float(run["created_at"]))  # type: ignore[arg-type]
    return out


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def bench_ray(quick: bool) -> tuple[list[tuple[str, str, str]], dict[str, object]]:
    """(label, target, measured) rows and the figures."""
    count, hold = (3, 2.0) if quick else (10, 5.0)
    root = Path(tempfile.mkdtemp(prefix="runyard-scale-"))
    setup = Setup(root)
    try:
        local = latencies(setup, "local", count)
        ray = latencies(setup, "ray", count)
        began = time.time()
        numbers = [setup.launch("--on", "ray", "--gpus", "1", "--", "python", "hold.py", str(hold)) for _ in range(20)]
        runs = setup.wait(numbers)
        makespan = max(float(r["ended_at"]) for r in runs) - began  # type: ignore[arg-type]
    finally:
        setup.close()
        shutil.rmtree(root, ignore_errors=True)
    ideal = 20 / 2 * hold
    rows = [
        (f"queue -> start, local run: p50 / p95 ({count} runs)", "(baseline)",
         f"{statistics.median(local):.2f} / {percentile(local, 0.95):.2f} s"),
        (f"queue -> start, Ray run: p50 / p95 ({count} runs)", "-",
         f"{statistics.median(ray):.2f} / {percentile(ray, 0.95):.2f} s"),
        (f"20 runs x 1 GPU x {hold:g} s through 2 GPUs: makespan / ideal", "-",
         f"{makespan:.1f} s / {ideal:.0f} s = {makespan / ideal:.2f}x"),
    ]
    return rows, {"local_start_s": local, "ray_start_s": ray, "makespan_s": makespan, "ideal_s": ideal}
