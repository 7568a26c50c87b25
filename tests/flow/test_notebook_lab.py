"""JupyterLab as runyard starts it, against a real JupyterLab: loopback only, the token required, a
cell run through the kernel API, and runyard's own judgement of when it is idle."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.flow.test_execution import wait_for
from tests.s3server import _free_ports

from runyard.notebook.lab import IdleJudge, lab_command, lab_environment


@dataclass
class Lab:
    url: str
    token: str
    root: Path
    process: subprocess.Popen[bytes]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    root = tmp_path_factory.mktemp("lab")
    (port,) = _free_ports(1)
    token = secrets.token_hex(24)
    base = "/runs/abc/"
    env = {**os.environ, **lab_environment(token), "JUPYTER_CONFIG_DIR": str(root / ".jupyter-config"),
           "JUPYTER_RUNTIME_DIR": str(root / ".jupyter-runtime"), "JUPYTER_DATA_DIR": str(root / ".jupyter-data")}
    log = (root / ".lab.log").open("wb")
    process = subprocess.Popen(lab_command(sys.executable, port=port, root_dir=root, base_url=base), env=env,
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=root)
    url = f"http://127.0.0.1:{port}{base.rstrip('/')}"

    def answers() -> bool:
        try:
            return httpx.get(f"{url}/api/status", headers={"Authorization": f"token {token}"}, timeout=2).is_success
        except httpx.HTTPError:
            return False

    try:
        wait_for(answers, 60, "JupyterLab to answer its API")
        yield Lab(url, token, root, process)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        log.close()


def execute(lab: Lab, kernel: str, code: str, timeout: float = 60) -> list[dict[str, object]]:
    """Run ``code`` in the kernel through Jupyter's kernel API (its websocket); the iopub messages."""
    return cell_messages(f"{lab.url.replace('http', 'ws', 1)}/api/kernels/{kernel}/channels",
                         f"Authorization: token {lab.token}", code, timeout=timeout)


def cell_messages(channels: str, credential: str, code: str, origin: str | None = None,
                  timeout: float = 60) -> list[dict[str, Any]]:
    """Run ``code`` over a kernel's channels websocket ``channels``, sending the header ``credential``
    (JupyterLab's token, or a lab origin's cookie) as a browser on ``origin`` would; the messages
    answering it, up to the kernel's idle."""
    import websocket

    ws = websocket.create_connection(channels, header=[credential], origin=origin, timeout=timeout)
    try:
        msg_id = uuid.uuid4().hex
        ws.send(json.dumps({"header": {"msg_id": msg_id, "username": "test", "session": uuid.uuid4().hex,
                                       "msg_type": "execute_request", "version": "5.3"},
                            "parent_header": {}, "metadata": {}, "channel": "shell",
                            "content": {"code": code, "silent": False, "store_history": True,
                                        "user_expressions": {}, "allow_stdin": False}}))
        seen: list[dict[str, Any]] = []
        while True:
            message = json.loads(ws.recv())
            if message.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            seen.append(message)
            if message["msg_type"] == "status" and message["content"]["execution_state"] == "idle":
                return seen
    finally:
        ws.close()


def kernels_of(run_id: str) -> list[Any]:
    """The kernel processes of a run (ipykernel with the run's RUNYARD_RUN_ID in its environment)."""
    import psutil

    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if "ipykernel_launcher" in " ".join(proc.info["cmdline"] or []) and \
                    proc.environ().get("RUNYARD_RUN_ID") == run_id:
                found.append(proc)
        except psutil.Error:
            continue
    return found


def test_jupyterlab_listens_on_loopback_only_and_only_with_its_token(lab: Lab) -> None:
    assert httpx.get(f"{lab.url}/api/kernels", timeout=5).status_code == 403
    assert httpx.get(f"{lab.url}/api/kernels", headers={"Authorization": "token wrong"}, timeout=5).status_code == 403
    assert httpx.get(f"{lab.url}/api/kernels", headers={"Authorization": f"token {lab.token}"}, timeout=5).is_success
    # The token is in the environment, not on the command line every user can read.
    assert lab.token not in " ".join(lab_command(sys.executable, port=1, root_dir=lab.root))
    with open(f"/proc/{lab.process.pid}/cmdline", "rb") as f:
        assert lab.token.encode() not in f.read()
    with pytest.raises(ValueError, match="32"):
        lab_environment("short")


def test_a_busy_cell_keeps_it_active_and_idleness_counts_from_the_last_activity(lab: Lab) -> None:
    headers = {"Authorization": f"token {lab.token}"}
    kernel = httpx.post(f"{lab.url}/api/kernels", headers=headers, json={"name": "python3"}, timeout=30).json()["id"]
    now = [time.time()]
    judge = IdleJudge(lab.url, lab.token, clock=lambda: now[0])
    execute(lab, kernel, "x = 1")
    judge.look()
    assert judge.last is not None and judge.last.kernels == 1
    # A long, silent cell (training): busy, so never idle, however long it stays silent.
    import threading

    running = threading.Thread(target=execute, args=(lab, kernel, "import time; time.sleep(4); "
                                                     "open('made-by-the-cell.txt', 'w').write('ok')"))
    running.start()
    wait_for(lambda: judge.ask().busy == 1, 30, "the kernel to be busy")
    now[0] += 3600
    assert judge.look() == 0.0
    running.join(60)
    assert (lab.root / "made-by-the-cell.txt").read_text() == "ok"  # the work directory is the run's
    # Done: the kernel's activity moved once more (it went idle), then nothing happens.
    now[0] += 10
    judge.look()
    assert judge.idle_for == 0.0
    for _ in range(3):
        now[0] += 600
        judge.look()  # asking does not count as activity (no_track_activity)
    assert judge.idle_for == 1800.0
    # A GPU process of the run counts even when no kernel is busy (a script started from a terminal).
    judge.gpu_busy = lambda: True
    judge.look()
    assert judge.idle_for == 0.0
    judge.gpu_busy = lambda: False
    now[0] += 60
    execute(lab, kernel, "y = 2")  # a cell run between two looks is seen through its kernel's activity
    judge.look()
    assert judge.idle_for == 0.0
    httpx.delete(f"{lab.url}/api/kernels/{kernel}", headers=headers, timeout=30)


def test_runyard_notebook_serves_jupyterlab_as_a_run_that_stops_when_idle_and_keeps_its_files(
        tmp_path: Path) -> None:
    from tests.flow.test_execution import TERMINAL, cli, wait_status

    project = tmp_path / "project"
    project.mkdir()
    (project / "data.csv").write_text("x,y\n1,2\n")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")},
           "RUNYARD_HOME": str(tmp_path / "home"), "RUNYARD_SYSTEM_INTERVAL": "0"}
    started = json.loads(cli(env, project, "notebook", "--idle", "15s", "--json").stdout)
    number, url = started["number"], started["url"]
    base, _, token = url.partition("/lab?token=")
    headers = {"Authorization": f"token {token}"}
    assert httpx.get(f"{base}/api/kernels", timeout=10).status_code == 403  # the token is needed
    # The run's files, and a notebook written through JupyterLab's own API.
    listing = httpx.get(f"{base}/api/contents", headers=headers, timeout=10).json()
    assert "data.csv" in {item["name"] for item in listing["content"]}
    made = {"type": "notebook", "content": {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}}
    assert httpx.put(f"{base}/api/contents/analysis.ipynb", headers=headers, json=made, timeout=10).is_success
    kernel = httpx.post(f"{base}/api/kernels", headers=headers, json={"name": "python3"}, timeout=60).json()["id"]
    lab = Lab(base, token, project, None)  # type: ignore[arg-type]
    execute(lab, kernel, "open('results.txt', 'w').write('trained')")
    # The kernel leads a session of its own: its group is recorded with the run's, so that nothing
    # of the run outlives it, whoever ends it.
    from runyard.exec.groups import recorded
    from runyard.exec.spec import run_directory

    run_id = json.loads(cli(env, project, "show", str(number), "--json").stdout)["id"]
    kernels = kernels_of(run_id)
    assert kernels
    wait_for(lambda: all(os.getpgid(k.pid) in recorded(run_directory(tmp_path / "home", run_id)) for k in kernels),
             15, "the kernel's group to be recorded")
    shown = json.loads(cli(env, project, "show", str(number), "--json").stdout)
    assert shown["status"] == "running" and shown["kind"] == "jupyterlab" and "jupyterlab" in shown["labels"]
    # The kind is not a way to run anything else as a long-lived notebook run.
    from runyard.config import resolve
    from runyard.errors import InvalidArgument
    from runyard.exec.submit import Submission, submit
    from runyard.types import RunKind

    with pytest.raises(InvalidArgument, match="labrun"):
        submit(resolve(environ=env, cwd=project), Submission(command=["python", "evil.py"], shell=False, cwd=project,
                                                             kind=RunKind.JUPYTERLAB))
    assert cli(env, project, "notebook", "--url", str(number)).stdout.strip() == url
    # Nothing runs now: it stops itself, its files kept as the run's outputs, its token nowhere kept.
    assert wait_status(env, project, number, TERMINAL, timeout=120) == "finished"
    wait_for(lambda: not any(k.is_running() and k.status() != "zombie" for k in kernels), 15, "the kernel to end")
    log = cli(env, project, "logs", str(number)).stdout
    assert "idle" in log and token not in log
    out = tmp_path / "back"
    cli(env, project, "cp", f"{number}:results.txt", str(out / "results.txt"))
    cli(env, project, "cp", f"{number}:analysis.ipynb", str(out / "analysis.ipynb"))
    assert (out / "results.txt").read_text() == "trained"
    assert json.loads((out / "analysis.ipynb").read_text())["nbformat"] == 4
    gone = cli(env, project, "notebook", "--url", str(number), check=False)
    assert gone.returncode != 0 and "no JupyterLab" in gone.stderr
    # Resumed with other resources: the files as run 1 left them, writable, in a new run.
    (project / "data.csv").write_text("changed on the laptop since\n")
    again = json.loads(cli(env, project, "notebook", "--resume", str(number), "--idle", "20s", "--json").stdout)
    resumed, url = again["number"], again["url"]
    refused = cli(env, project, "notebook", "--resume", str(resumed), "--idle", "1s", check=False)
    assert refused.returncode == 2 and "stop it first" in refused.stderr
    base, _, token = url.partition("/lab?token=")
    headers = {"Authorization": f"token {token}"}
    got = httpx.get(f"{base}/api/contents/results.txt", headers=headers, params={"content": "1"}, timeout=10).json()
    assert got["content"] == "trained" and got["writable"]
    data = httpx.get(f"{base}/api/contents/data.csv", headers=headers, params={"content": "1"}, timeout=10).json()
    assert data["content"] == "x,y\n1,2\n"  # run 1's snapshot, not the laptop's file now
    shown = json.loads(cli(env, project, "show", str(resumed), "--json").stdout)
    assert shown["parent"] == number and shown["config"]["idle"] == 20 and shown["kind"] == "jupyterlab"
    assert wait_status(env, project, resumed, TERMINAL, timeout=120) == "finished"
    cli(env, project, "cp", f"{resumed}:results.txt", str(out / "again.txt"))
    assert (out / "again.txt").read_text() == "trained"  # kept again: a chain of resumes carries the files


def test_a_process_that_took_jupyterlabs_port_first_is_never_sent_its_token(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """labrun picks a free port and JupyterLab binds it a moment later: another local user's process
    that takes it in between must not receive the token (nor be written down as the lab)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from runyard.notebook import labrun
    from runyard.notebook.connection import read_connection

    asked: list[str] = []

    class Squatter(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(f"{self.path} {self.headers.get('authorization')}")
            body = b'{"kernels": 0, "connections": 0, "last_activity": "2026-01-01T00:00:00Z", "started": "x"}'
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    squatter = ThreadingHTTPServer(("127.0.0.1", 0), Squatter)
    threading.Thread(target=squatter.serve_forever, daemon=True).start()
    run_id = "01J" + "C" * 23
    monkeypatch.setenv("RUNYARD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RUNYARD_RUN_ID", run_id)
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(tmp_path / "jupyter-config"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(labrun, "restore_parent", lambda run, root: labrun.Restored(0))
    monkeypatch.setattr(labrun, "_free_port", lambda host: squatter.server_address[1])
    (tmp_path / "home" / "runs" / run_id).mkdir(parents=True)
    try:
        code = labrun.main(["--idle", "60"])
    finally:
        squatter.shutdown()
    assert code != 0  # JupyterLab could not listen there, and said so
    assert asked == []  # nothing was asked of the squatter, so no token went to it
    assert read_connection(tmp_path / "home", run_id) is None
