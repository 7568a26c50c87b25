"""Remote mode end to end: scripts on a "client machine" (their own home) logging to a real server
process, through server restarts and a network that drops and delays connections."""

from __future__ import annotations

import contextlib
import json
import os
import random
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.flow.test_execution import wait_for
from tests.unit.server.conftest import LiveServer, client_env, home_env
from tests.unit.server.conftest import live_server as live_server

pytestmark = pytest.mark.timeout(240)


def script(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "train.py"
    path.write_text(textwrap.dedent(body))
    return path


def cli(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "runyard.cli.main", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


def steps_of(server_url: str, ref: str, key: str) -> list[int]:
    import msgpack
    import numpy as np

    r = httpx.get(f"{server_url}/api/v1/runs/{ref}/points/{key}", headers={"accept": "application/msgpack"})
    r.raise_for_status()
    return np.frombuffer(msgpack.unpackb(r.content)["step"], "<i8").tolist()


def wait_for_points(server_url: str, ref: str, key: str, above: int, timeout: float = 60) -> int:
    """Wait until the server holds more than ``above`` points of the series; returns how many."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = httpx.get(f"{server_url}/api/v1/runs/{ref}/metrics")
        if response.status_code == 200:
            count = next((s["count"] for s in response.json() if s["key"] == key), 0)
            if count > above:
                return int(count)
        time.sleep(0.05)
    raise AssertionError(f"the server held no more than {above} points of {ref}:{key} after {timeout} s")


def test_a_script_logs_to_the_server_and_the_cli_reads_it_like_locally(live_server: LiveServer,
                                                                       tmp_path: Path) -> None:
    env = client_env(tmp_path / "laptop", live_server.url)
    path = script(tmp_path, """
        import runyard
        run = runyard.init(project="remote", name="r1", config={"lr": 0.1}, labels=["baseline"])
        for i in range(30_000):
            run.log({"loss": 1.0 / (i + 1), "acc": float("nan") if i == 7 else 0.5}, step=i)
        print("hello from the run")
        path = __import__("pathlib").Path("model.bin")
        path.write_bytes(b"weights" * 1000)
        run.log_artifact(str(path))
        run.finish()
    """)
    done = subprocess.run([sys.executable, str(path)], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert steps_of(live_server.url, "r1", "loss") == list(range(30_000))
    server_env = home_env(live_server.home, live_server.db_url)
    for command in (["show", "r1"], ["ls", "--json"], ["logs", "r1"], ["show", "r1", "--json"]):
        remote, local = cli(env, *command), cli(server_env, *command)
        assert remote.returncode == 0 and local.returncode == 0, remote.stderr + local.stderr
        assert remote.stdout == local.stdout, command
    assert "hello from the run" in cli(env, "logs", "r1").stdout
    assert cli(env, "label", "r1", "+best").returncode == 0
    assert cli(env, "note", "r1", "shipped").returncode == 0
    shown = json.loads(cli(server_env, "show", "r1", "--json").stdout)
    assert "best" in shown["labels"] and "shipped" in shown["notes"] and shown["status"] == "finished"
    copied = cli(env, "cp", "r1:model.bin", str(tmp_path / "copy.bin"))
    assert copied.returncode == 0, copied.stderr
    assert (tmp_path / "copy.bin").read_bytes() == b"weights" * 1000
    api = subprocess.run([sys.executable, "-c", "import runyard, math; r = runyard.Api().run('r1'); "
                          "h = r.history('acc'); print(len(h), math.isnan(h.value[7]))"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert api.stdout.split() == ["30000", "True"], api.stderr


def test_server_killed_and_restarted_mid_run_loses_and_duplicates_nothing(live_server: LiveServer,
                                                                          tmp_path: Path) -> None:
    env = client_env(tmp_path / "laptop", live_server.url)
    env["RUNYARD_FINISH_TIMEOUT"] = "60"
    flag = tmp_path / "go-on"
    path = script(tmp_path, f"""
        import time, pathlib, runyard
        run = runyard.init(project="p", name="restarts")
        flag = pathlib.Path({str(flag)!r})
        i = 0
        while not flag.exists() or i < 40_000:
            run.log({{"x": float(i)}}, step=i)
            i += 1
            if i % 1000 == 0:
                time.sleep(0.02)
        run.finish()
        print(i)
    """)
    child = subprocess.Popen([sys.executable, str(path)], env=env, cwd=tmp_path, stdout=subprocess.PIPE, text=True)
    arrived = wait_for_points(live_server.url, "restarts", "x", above=0)
    live_server.kill()  # mid-run, with no warning
    time.sleep(3.0)  # an outage of 3 s: the script keeps logging; the shipper keeps retrying
    live_server.start()
    wait_for_points(live_server.url, "restarts", "x", above=arrived)  # shipping has resumed
    live_server.kill()
    time.sleep(1.0)  # a second, shorter outage
    live_server.start()
    flag.touch()
    out, _ = child.communicate(timeout=120)
    assert child.returncode == 0
    logged = int(out.strip().splitlines()[-1])
    assert steps_of(live_server.url, "restarts", "x") == list(range(logged))  # all, once, in order
    run = httpx.get(f"{live_server.url}/api/v1/runs/restarts").json()
    assert run["status"] == "finished" and run["summary"]["x"] == logged - 1


class FlakyProxy:
    """A loopback TCP proxy that refuses some connections at once, cuts the others after a random
    lifetime (mid-request or mid-response, whatever is in flight), and delays each, with a fixed seed.

    It listens on another loopback address with the server's port, so the Host header the client
    sends (127.0.0.2:PORT) names a loopback address and the server's port, as a forwarded port would.
    """

    HOST = "127.0.0.2"

    def __init__(self, target_port: int, seed: int = 7) -> None:
        self.port = target_port
        self.rng = random.Random(seed)
        self.dropped = self.cut = 0
        self._sock = socket.create_server((self.HOST, self.port))
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            if self.rng.random() < 0.2:
                self.dropped += 1
                conn.close()
                continue
            args = (conn, self.rng.uniform(0, 0.1), self.rng.uniform(0.05, 0.6))
            threading.Thread(target=self._pipe, args=args, daemon=True).start()

    def _pipe(self, conn: socket.socket, delay: float, lifetime: float) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self.port))
        except OSError:
            conn.close()
            return
        time.sleep(delay)
        done = threading.Event()

        def forward(src: socket.socket, dst: socket.socket) -> None:
            try:
                while data := src.recv(65536):
                    dst.sendall(data)
            except OSError:
                pass
            done.set()

        threading.Thread(target=forward, args=(conn, upstream), daemon=True).start()
        threading.Thread(target=forward, args=(upstream, conn), daemon=True).start()
        if not done.wait(lifetime):
            self.cut += 1  # whatever was in flight is lost; the client must notice and re-send
        for s in (conn, upstream):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def close(self) -> None:
        self._stop = True
        self._sock.close()


@pytest.fixture
def proxy(live_server: LiveServer) -> Iterator[FlakyProxy]:
    p = FlakyProxy(live_server.port)
    yield p
    p.close()


@pytest.mark.engines("sqlite")
def test_a_network_that_drops_and_delays_connections_loses_and_duplicates_nothing(
        live_server: LiveServer, proxy: FlakyProxy, tmp_path: Path) -> None:
    env = client_env(tmp_path / "laptop", f"http://{proxy.HOST}:{proxy.port}")
    env["RUNYARD_FINISH_TIMEOUT"] = "90"
    path = script(tmp_path, """
        import time, runyard
        run = runyard.init(project="p", name="flaky")
        for i in range(60_000):
            run.log({"x": float(i)}, step=i)
            if i % 2000 == 0:
                time.sleep(0.05)
        run.log_artifact(__file__)
        run.finish()
    """)
    done = subprocess.run([sys.executable, str(path)], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, done.stderr
    sync = cli(env, "sync")
    assert sync.returncode == 0, sync.stderr
    assert proxy.dropped > 0 and proxy.cut > 0  # the network really misbehaved
    assert steps_of(live_server.url, "flaky", "x") == list(range(60_000))
    arts = httpx.get(f"{live_server.url}/api/v1/runs/flaky/artifacts").json()
    assert [a["path"] for a in arts] == ["train.py"]


@pytest.mark.engines("sqlite")
def test_a_run_started_while_the_server_is_down_gets_its_number_when_it_arrives(db_url: str,
                                                                               tmp_path: Path) -> None:
    server = LiveServer(tmp_path / "server-home", db_url)
    env = client_env(tmp_path / "laptop", server.url)
    env["RUNYARD_FINISH_TIMEOUT"] = "1"
    path = script(tmp_path, """
        import time, runyard
        t0 = time.monotonic()
        run = runyard.init(project="p", name="offline")
        for i in range(1000):
            run.log({"x": float(i)}, step=i)
        run.finish()
        print(f"{time.monotonic() - t0:.2f}")
    """)
    done = subprocess.run([sys.executable, str(path)], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert float(done.stdout.strip()) < 5  # training never waited for the absent server
    assert "runyard sync" in done.stderr  # and was told where its records are
    server.start()
    try:
        sync = cli(env, "sync", "--json")
        assert sync.returncode == 0, sync.stderr
        run = httpx.get(f"{server.url}/api/v1/runs/offline").json()
        assert run["number"] == 1 and run["status"] == "finished"
        assert steps_of(server.url, "offline", "x") == list(range(1000))
    finally:
        server.kill()


def test_a_logged_point_reaches_an_event_subscriber_within_a_second(live_server: LiveServer,
                                                                   tmp_path: Path) -> None:
    env = client_env(tmp_path / "laptop", live_server.url)
    path = script(tmp_path, """
        import sys, time, runyard
        run = runyard.init(project="p", name="live")
        run.log({"t": time.time()}, step=0)
        for line in sys.stdin:          # one point per line the test sends
            run.log({"t": time.time()}, step=int(line))
        run.finish()
    """)
    child = subprocess.Popen([sys.executable, str(path)], env=env, cwd=tmp_path, stdin=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while httpx.get(f"{live_server.url}/api/v1/runs/live").status_code == 404:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        delays: list[float] = []
        with httpx.stream("GET", f"{live_server.url}/api/v1/events", params={"run": "live"}, timeout=30) as events:
            assert child.stdin is not None
            kind = None
            sent = 0
            for line in events.iter_lines():
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: ") and kind == "run" and sent == 0:
                    sent = 1
                    child.stdin.write("1\n")
                    child.stdin.flush()
                elif line.startswith("data: ") and kind == "metric":
                    data = json.loads(line[6:])
                    now = time.time()
                    delays += [now - v for s, v in zip(data["step"], data["value"], strict=True) if s >= 1]
                    if len(delays) >= 5:
                        break
                    sent += 1
                    child.stdin.write(f"{sent}\n")
                    child.stdin.flush()
        assert len(delays) >= 5 and max(delays) < 1.0, delays
    finally:
        if child.stdin:
            child.stdin.close()
        child.wait(60)


@pytest.mark.engines("sqlite")
def test_runyard_run_through_a_server_runs_the_submitted_code_there(live_server: LiveServer,
                                                                     tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "train.py").write_text(textwrap.dedent("""
        import json, os, sys
        print("training with", os.environ["RUNYARD_PARAM_lr"])
        for step in range(5):
            print(json.dumps({"step": step, "loss": 1.0 / (step + 1)}), flush=True)
        sys.exit(3)
    """))
    env = {**client_env(tmp_path / "laptop", live_server.url), "VIRTUAL_ENV": "/only/on/the/laptop"}
    follow = subprocess.run([sys.executable, "-m", "runyard.cli.main", "run", "-f", "--name", "remote-launch",
                             "--param", "lr=0.5", "--", "python", "train.py"], env=env, cwd=project,
                            capture_output=True, text=True, timeout=180)
    assert follow.returncode == 3, follow.stderr  # the run's exit code, through the server
    assert follow.stdout.startswith("run 1 queued") and "training with 0.5" in follow.stdout
    (project / "train.py").write_text("raise SystemExit('edited after submission')\n")
    run = httpx.get(f"{live_server.url}/api/v1/runs/remote-launch").json()
    assert run["status"] == "failed" and run["exit_code"] == 3 and run["config"] == {"lr": 0.5}
    # It ran in the server's environment: the laptop's paths mean nothing on the server's machine.
    assert run["launch"]["environment"]["PATH"] == os.environ["PATH"]
    assert run["launch"]["environment"].get("VIRTUAL_ENV") != "/only/on/the/laptop"
    assert steps_of(live_server.url, "remote-launch", "loss") == [0, 1, 2, 3, 4]
    again = subprocess.run([sys.executable, "-m", "runyard.cli.main", "run", "--json", "--", "python", "train.py"],
                           env=env, cwd=project, capture_output=True, text=True, timeout=60)
    assert json.loads(again.stdout)["snapshot_new_bytes"] == len("raise SystemExit('edited after submission')\n") + \
        len(b'{"files":{"train.py":["' + b"0" * 64 + b'",420]},"version":1}')  # only the edit and its manifest
    refused = subprocess.run([sys.executable, "-m", "runyard.cli.main", "run", "--mount", "/etc:etc", "--",
                              "true"], env=env, cwd=project, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "RUN:PATH" in refused.stderr


def test_ui_starts_the_local_server_once_and_prints_its_url(tmp_path: Path) -> None:
    from tests.unit.server.conftest import free_port

    port = free_port()
    env = home_env(tmp_path / "home", f"sqlite:///{tmp_path / 'home' / 'runyard.db'}")
    env.pop("DISPLAY", None)
    try:
        first = cli(env, "ui", "--port", str(port), timeout=60)
        assert first.returncode == 0, first.stderr
        login = f"http://127.0.0.1:{port}/api/login?code="  # the link logs the browser in once
        assert first.stdout.startswith(login) and "started the local server" in first.stderr
        with httpx.Client(follow_redirects=True) as browser:
            browser.get(first.stdout.strip())
            assert browser.get(f"http://127.0.0.1:{port}/api/health").json()["status"] == "ok"
        again = cli(env, "ui", "--port", str(port), timeout=60)
        assert again.stdout.startswith(login) and again.stdout != first.stdout  # a new code
        assert "started" not in again.stderr  # found the running one
        other = home_env(tmp_path / "other", f"sqlite:///{tmp_path / 'other' / 'runyard.db'}")
        taken = cli(other, "ui", "--port", str(port), timeout=60)  # another home must not be shown this one's runs
        assert taken.returncode != 0 and taken.stdout == ""
        assert "is a runyard server of another home or database" in taken.stderr
    finally:
        subprocess.run(["pkill", "-f", f"runyard.cli.main server --port {port}"], check=False)


def test_alert_rules_inbox_and_status_through_the_server(live_server: LiveServer, tmp_path: Path) -> None:
    env = client_env(tmp_path / "laptop", live_server.url)
    added = cli(env, "alert", "add", "--when", "nan", "--metric", "loss", "--project", "remote", "--json")
    assert added.returncode == 0, added.stderr
    rule = json.loads(added.stdout)
    assert (rule["when"], rule["metric"], rule["project"]) == ("nan", "loss", "remote")
    refused = cli(env, "alert", "add", "--when", "drop", "--metric", "acc")
    assert refused.returncode != 0 and "needs by" in refused.stderr
    path = script(tmp_path, """
        import math, runyard
        with runyard.init(project="remote", name="diverged") as run:
            run.alert("acc-drop", "drop", metric="acc", by="50%")
            run.log({"loss": 1.0, "acc": 0.9}, step=0)
            run.log({"loss": math.nan, "acc": 0.3}, step=1)
    """)
    done = subprocess.run([sys.executable, str(path)], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    listed = json.loads(cli(env, "alert", "ls", "--json").stdout)
    assert sorted((r["name"], r["when"]) for r in listed) == [("acc-drop", "drop"), ("nan-loss", "nan")]
    wait_for(lambda: "2 alerts" in cli(env, "status").stdout, 30, "both alerts")
    assert cli(env, "status").stdout.strip() == "0 running · 0 queued · 2 alerts"
    events = [json.loads(x) for x in cli(env, "inbox", "--json").stdout.splitlines()]
    assert sorted((e["kind"], e["step"]) for e in events) == [("drop", 1), ("nan", 1)]
    assert cli(env, "inbox").stdout.strip() == "no unread alerts"  # read once, through the server
    assert cli(env, "status").stdout.strip() == "0 running · 0 queued"
    assert cli(env, "alert", "rm", str(rule["id"])).returncode == 0
    assert cli(env, "alert", "rm", str(rule["id"])).returncode == 1


def test_status_says_when_the_server_cannot_be_reached(tmp_path: Path) -> None:
    from tests.unit.server.conftest import free_port

    env = client_env(tmp_path / "laptop", f"http://127.0.0.1:{free_port()}")
    result = cli(env, "status")
    assert result.returncode == 1 and result.stdout == ""
    assert "cannot reach the runyard server at http://127.0.0.1:" in result.stderr
    bad = cli({**env, "RUNYARD_SERVER": "file:///etc/passwd"}, "status")
    assert bad.returncode != 0 and "root:" not in bad.stdout + bad.stderr


def test_ui_and_status_say_so_when_the_port_holds_something_else(tmp_path: Path) -> None:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"<html>a notebook server</html>"
            self.send_response(200)
            self.send_header("content-type", "text/html")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    other = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    port = other.server_address[1]
    try:
        env = home_env(tmp_path / "home", f"sqlite:///{tmp_path / 'home' / 'runyard.db'}")
        ui = cli(env, "ui", "--no-browser", "--port", str(port), timeout=60)
        assert ui.returncode != 0 and "is not a runyard server" in ui.stderr and "Traceback" not in ui.stderr
        status = cli(client_env(tmp_path / "laptop", f"http://127.0.0.1:{port}"), "status")
        assert status.returncode == 1 and "not runyard's JSON" in status.stderr and "Traceback" not in status.stderr
    finally:
        other.shutdown()
