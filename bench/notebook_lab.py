"""bench/notebook.py, section "lab": from `runyard notebook` to a usable JupyterLab.

    python bench/notebook_lab.py [--quick]     # this section alone (bench/notebook.py runs them all)

Timed from starting `runyard notebook --json` in a fresh home until JupyterLab, at the address it
printed, has run a cell (`1 + 1`) in a new kernel: the CLI's snapshot and queueing, the agent's
start, the supervisor placing the code, JupyterLab's start, a kernel's start and one execution.
The bare workload a user would compare with is `jupyter lab` started by hand on the same files
and the same cell run in it; both are timed in the same run, one after the other. No target is
set by the issue; the overhead over the bare start is what runyard adds.
"""

from __future__ import annotations

# This folder holds logging.py, which would shadow the standard library's logging module: off the path.
import sys
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import json
import os
import secrets
import signal
import socket
import statistics
import subprocess
import tempfile
import time
import uuid

import httpx

RUNYARD = str(Path(sys.executable).parent / "runyard")


def _cell(base: str, token: str, timeout: float = 120.0) -> None:
    """Start a kernel at ``base`` and run ``1 + 1`` in it (Jupyter's kernel API, its websocket)."""
    import websocket

    headers = {"Authorization": f"token {token}"}
    kernel = httpx.post(f"{base}/api/kernels", headers=headers, json={"name": "python3"}, timeout=timeout).json()["id"]
    ws = websocket.create_connection(f"{base.replace('http', 'ws', 1)}/api/kernels/{kernel}/channels",
                                     header=[f"Authorization: token {token}"], timeout=timeout)
    try:
        msg_id = uuid.uuid4().hex
        ws.send(json.dumps({"header": {"msg_id": msg_id, "username": "bench", "session": uuid.uuid4().hex,
                                       "msg_type": "execute_request", "version": "5.3"}, "parent_header": {},
                            "metadata": {}, "channel": "shell",
                            "content": {"code": "1 + 1", "silent": False, "store_history": False,
                                        "user_expressions": {}, "allow_stdin": False}}))
        while True:
            message = json.loads(ws.recv())
            if (message.get("parent_header", {}).get("msg_id") == msg_id and message["msg_type"] == "status"
                    and message["content"]["execution_state"] == "idle"):
                return
    finally:
        ws.close()


def time_runyard(work: Path, n: int) -> float:
    project = work / f"project-{n}"
    project.mkdir()
    (project / "data.csv").write_text("x,y\n1,2\n")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")},
           "RUNYARD_HOME": str(work / f"home-{n}"), "RUNYARD_SYSTEM_INTERVAL": "0"}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    t0 = time.perf_counter()
    out = subprocess.run([RUNYARD, "notebook", "--json", "--idle", "10m"], cwd=project, env=env, capture_output=True,
                         text=True, check=True)
    base, _, token = json.loads(out.stdout)["url"].partition("/lab?token=")
    _cell(base, token)
    took = time.perf_counter() - t0
    subprocess.run([RUNYARD, "stop", str(json.loads(out.stdout)["number"])], cwd=project, env=env,
                   capture_output=True)
    subprocess.run([RUNYARD, "agent", "stop"], cwd=project, env=env, capture_output=True)
    return took


def time_bare(work: Path, n: int) -> float:
    root = work / f"bare-{n}"
    root.mkdir()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = secrets.token_hex(24)
    t0 = time.perf_counter()
    lab = subprocess.Popen([sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
                            *(["--allow-root"] if os.geteuid() == 0 else [])], cwd=root,
                           env={**os.environ, "JUPYTER_TOKEN": token}, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        while True:
            try:
                if httpx.get(f"{base}/api/status", headers={"Authorization": f"token {token}"}, timeout=2).is_success:
                    break
            except httpx.HTTPError:
                time.sleep(0.05)
        _cell(base, token)
        return time.perf_counter() - t0
    finally:
        os.killpg(lab.pid, signal.SIGTERM)
        lab.wait(30)


def measure(quick: bool) -> tuple[float, float]:
    """Medians (seconds): (runyard notebook to a cell run, jupyter lab by hand to the same)."""
    repetitions = 1 if quick else 3
    with tempfile.TemporaryDirectory(prefix="runyard-bench-lab-") as tmp:
        work = Path(tmp)
        ours, bare = [], []
        for n in range(repetitions):
            bare.append(time_bare(work, n))
            ours.append(time_runyard(work, n))
    return statistics.median(ours), statistics.median(bare)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    ours, bare = measure(args.quick)
    print(f"runyard notebook -> a cell run in its JupyterLab (median)  {ours:.2f} s")
    print(f"jupyter lab by hand -> the same cell (median)              {bare:.2f} s")
    print(f"overhead                                                   {ours - bare:+.2f} s")


if __name__ == "__main__":
    main()
