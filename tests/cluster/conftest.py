"""A real Ray head on loopback, started once for the tests that need it (``ray_head``).

Two fake GPUs (``--num-gpus 2``) so that GPU scheduling is exercised on a machine without any; the
GCS port and worker ports stay clear of the other services of a test machine (Redis holds 6379,
the test servers take ports below 20000). The head runs with this environment's Python first on
PATH, as a node must have runyard installed in the Python it finds.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from tests.rayhead import stop_head
from tests.unit.server.conftest import free_port

#: Seconds `ray start` may take on a busy machine.
START_TIMEOUT = 120.0


@dataclass(frozen=True)
class RayHead:
    #: The dashboard, whose Jobs API runyard submits to (the `ray` setting).
    address: str
    temp_dir: Path

    def jobs(self) -> list[dict[str, object]]:
        return list(httpx.get(f"{self.address}/api/jobs/", timeout=10).json())


def _ray_env(temp_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    env["TMPDIR"] = str(temp_dir)  # where a job's supervisor makes its home on the "node"
    env["RUNYARD_NODE_CACHE"] = str(temp_dir / "node-cache")
    return env


@pytest.fixture(scope="session")
def ray_head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayHead]:
    ray = Path(sys.executable).parent / "ray"
    if not ray.exists():
        pytest.fail("Ray is not installed in this environment: `make install` installs runyard[ray]")
    temp_dir = Path("/tmp") / f"ry{os.getpid()}"  # Ray's socket paths must stay short
    temp_dir.mkdir(exist_ok=True)
    dashboard = free_port()
    env = _ray_env(temp_dir)
    started = subprocess.run(
        [str(ray), "start", "--head", "--port", str(free_port()), "--node-ip-address", "127.0.0.1",
         "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard), "--include-dashboard", "true",
         "--num-gpus", "2", "--num-cpus", "4", "--min-worker-port", "20000", "--max-worker-port", "20200",
         "--temp-dir", str(temp_dir), "--disable-usage-stats"],
        env=env, capture_output=True, text=True, timeout=START_TIMEOUT)
    if started.returncode != 0:
        pytest.fail(f"ray start failed:\n{started.stdout}\n{started.stderr}")
    address = f"http://127.0.0.1:{dashboard}"
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            if httpx.get(f"{address}/api/jobs/", timeout=5).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"Ray's Jobs API did not answer at {address}")
        time.sleep(0.5)
    try:
        yield RayHead(address, temp_dir)
    finally:
        stop_head(temp_dir)  # not `ray stop`, which would end every Ray cluster of the machine
        shutil.rmtree(temp_dir, ignore_errors=True)
