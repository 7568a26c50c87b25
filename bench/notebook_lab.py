"""bench/notebook.py, section "lab": from `runyard notebook` to a usable JupyterLab.

    python bench/notebook_lab.py [--quick]     # this section alone (bench/notebook.py runs them all)

Timed from starting `runyard notebook --json` in a fresh home until JupyterLab, at the address it
printed, has run a cell (`1 + 1`) in a new kernel: the CLI's snapshot and queueing, the agent's
start, the supervisor placing the code, JupyterLab's start, a kernel's start and one execution.
The bare workload a user would compare with is `jupyter lab` started by hand on the same files
and the same cell run in it; both are timed in the same run, one after the other. No target is
set by the issue; the overhead over the bare start is what runyard adds.

Through a server (`measure_through_server`): `runyard notebook` with RUNYARD_SERVER set, its one-time
link opened (the lab origin's cookie), and the same cell run through the lab origin; then the lab
origin's cost per request: GET /api/contents of the same JupyterLab, directly with its token and
through the lab origin with the cookie, alternating, medians and p99 of each.
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


def _cell(base: str, token: str | None = None, timeout: float = 120.0, cookie: str | None = None) -> None:
    """Start a kernel at ``base`` and run ``1 + 1`` in it (Jupyter's kernel API, its websocket), with
    JupyterLab's ``token``, or a lab origin's session ``cookie``."""
    import websocket

    origin = base.split("/lab/", 1)[0]
    headers = {"Authorization": f"token {token}"} if token else {"Cookie": f"runyard_lab={cookie}", "Origin": origin}
    kernel = httpx.post(f"{base}/api/kernels", headers=headers, json={"name": "python3"}, timeout=timeout).json()["id"]
    ws = websocket.create_connection(f"{base.replace('http', 'ws', 1)}/api/kernels/{kernel}/channels",
                                     header=[f"{k}: {v}" for k, v in headers.items() if k != "Origin"],
                                     origin=origin, timeout=timeout)
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


def measure_through_server(requests: int = 300) -> dict[str, float]:
    """Seconds: `runyard notebook` through a server to a cell run through its lab origin; and the
    per-request p50/p99 of GET /api/contents directly and through the lab origin."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.unit.server.conftest import LiveServer, client_env, free_port, home_env

    with tempfile.TemporaryDirectory(prefix="runyard-bench-lab-server-") as tmp:
        work = Path(tmp)
        db = f"sqlite:///{work / 'runyard.db'}"
        server_env = home_env(work / "server-home", db)
        made = subprocess.run([RUNYARD, "token", "create", "--role", "writer", "--name", "bench", "--json"],
                              env=server_env, cwd=work, capture_output=True, text=True, check=True)
        lab_port = free_port()
        server = LiveServer(work / "server-home", db, insecure_local=False, args=("--lab-port", str(lab_port)))
        server.start()
        project = work / "project"
        project.mkdir()
        (project / "data.csv").write_text("x,y\n1,2\n")
        env = client_env(work / "laptop", server.url, json.loads(made.stdout)["token"])
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        try:
            t0 = time.perf_counter()
            out = json.loads(subprocess.run([RUNYARD, "notebook", "--json", "--idle", "10m", "--wait", "180"],
                                            cwd=project, env=env, capture_output=True, text=True, check=True).stdout)
            opened = httpx.get(out["url"], timeout=30)
            cookie = opened.cookies["runyard_lab"]
            base = out["url"].split("?", 1)[0].rstrip("/")
            _cell(base, cookie=cookie)
            through_server = time.perf_counter() - t0
            run_id = base.rsplit("/", 1)[1]
            found = json.loads((work / "server-home" / "runs" / run_id / "lab.json").read_text())
            direct = f"http://127.0.0.1:{found['port']}/lab/{run_id}/api/contents"
            proxied = f"{base}/api/contents"
            times: dict[str, list[float]] = {"direct": [], "proxied": []}
            with httpx.Client(timeout=30) as client:
                for _ in range(requests):
                    for name, url, headers in (("direct", direct, {"Authorization": f"token {found['token']}"}),
                                               ("proxied", proxied, {"Cookie": f"runyard_lab={cookie}"})):
                        started = time.perf_counter()
                        client.get(url, headers=headers).raise_for_status()
                        times[name].append(time.perf_counter() - started)
            subprocess.run([RUNYARD, "stop", str(out["number"])], cwd=project, env=env, capture_output=True)
        finally:
            server.kill()
            subprocess.run([RUNYARD, "agent", "stop"], env=server_env, cwd=work, capture_output=True)

    def p99(values: list[float]) -> float:
        return sorted(values)[int(0.99 * (len(values) - 1))]

    return {"through_server": through_server,
            "direct_p50": statistics.median(times["direct"]), "direct_p99": p99(times["direct"]),
            "proxied_p50": statistics.median(times["proxied"]), "proxied_p99": p99(times["proxied"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    ours, bare = measure(args.quick)
    print(f"runyard notebook -> a cell run in its JupyterLab (median)  {ours:.2f} s")
    print(f"jupyter lab by hand -> the same cell (median)              {bare:.2f} s")
    print(f"overhead                                                   {ours - bare:+.2f} s")
    far = measure_through_server(100 if args.quick else 300)
    print(f"through a server -> a cell run through its lab origin       {far['through_server']:.2f} s")
    print(f"GET /api/contents direct p50 / p99                          {far['direct_p50'] * 1000:.2f} / "
          f"{far['direct_p99'] * 1000:.2f} ms")
    print(f"GET /api/contents through the lab origin p50 / p99          {far['proxied_p50'] * 1000:.2f} / "
          f"{far['proxied_p99'] * 1000:.2f} ms")


if __name__ == "__main__":
    main()
