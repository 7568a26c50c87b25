"""Model-server benchmark: what `runyard serve` adds to a prediction, against the same handler behind a
bare FastAPI app, and `mlflow models serve` where it is installed.

    python bench/serve.py            # the table: req/s, p50, p99 per contender, and runyard's added p50
    python bench/serve.py --quick    # one short round
    python bench/serve.py --json     # also print the figures as JSON

The digits model is trained once (examples/digits/train.py as a `runyard run`, in a temporary home
and project); the request is its first example, 8x8 rows of pixels as JSON. Contenders:

- runyard serve: `runyard serve N:model --handler examples/digits/serve.py:Digits --json`, the real
  thing (a serve run: its supervisor, its per-request log line, its metrics), at the URL it prints.
- bare FastAPI: the same handler (`make_handler`, `load()`) behind `POST /predict` doing
  body -> orjson -> `handler.predict(image=np.asarray(...))` in the thread pool -> orjson, nothing
  checked or resized, served by uvicorn with the settings of runyard's server process
  (serve/main.py: loop and http "auto", no access log, lifespan off) in a subprocess on loopback.
  The leanest endpoint a user would write by hand: what runyard adds is measured against it.
- mlflow models serve: the same model trained in .venv-peers/mlflow (`make bench-peers`), saved
  with mlflow.sklearn (predict_proba), served with `--env-manager local`; its input is the 64 pixel
  values the handler computes. Reported as "not measured: why" when that environment is missing.

The load comes from a separate process (no GIL shared with a server) speaking HTTP/1.1 with
keep-alive over plain sockets (its own cost per request is tens of microseconds): a sequential phase
(latency p50/p99) and a concurrent one (8 connections, requests/s), each after a discarded warm-up.
Rounds interleave the contenders (A B C A B C ...) so that the machine's noise hits all alike; a
contender's figures are medians over its rounds, and the added p50 is the median over rounds of
(runyard's p50 - bare FastAPI's p50) in the same round. Target: runyard serve adds <= 1 ms at p50.
The CPU column is the CPU time (user + system) per request of the concurrent phase, from /proc: the
server process, and for runyard serve also its supervisor (which keeps the server's log line per
request) and the home's agent (which ingests those lines and the metrics), off the request's path
but on the same machine. Setting up takes ~15 s (the training run, both servers), ~40 s more with
mlflow; a full run ~2.5 min.
"""

from __future__ import annotations

# This folder holds logging.py, which would shadow the standard library's logging module for any
# script run from here: take the folder off the path (as bench/launch.py does).
import sys
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RUNYARD = str(Path(sys.executable).parent / "runyard")
HANDLER = "examples/digits/serve.py:Digits"
PEER = ROOT / ".venv-peers" / "mlflow"
#: Milliseconds runyard serve may add to a prediction at p50, over the bare FastAPI app.
TARGET_ADDED_P50_MS = 1.0
CONNECTIONS = 8


@dataclass
class Contender:
    name: str
    url: str
    path: str
    body: bytes
    #: Per round: {"p50_ms", "p99_ms", "requests", "req_per_s", "errors", "cpu_us_per_request"}.
    rounds: list[dict[str, Any]] = field(default_factory=list)
    #: The processes whose CPU time a request costs ({what: psutil.Process}); empty: not measured.
    processes: dict[str, Any] = field(default_factory=dict)


# --- the load generator (its own process: `bench/serve.py _load`) -------------------------------------

class Connection:
    """One keep-alive HTTP/1.1 connection sending the same POST again and again."""

    def __init__(self, url: str, path: str, body: bytes) -> None:
        host, port = url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.request = (f"POST {path} HTTP/1.1\r\nhost: {host}:{port}\r\ncontent-type: application/json\r\n"
                        f"content-length: {len(body)}\r\n\r\n").encode() + body
        self.buffer = b""

    def post(self) -> int:
        """Send the request, read the whole response; its status."""
        self.sock.sendall(self.request)
        while b"\r\n\r\n" not in self.buffer:
            self._more()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length = None
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
            elif name.strip().lower() == b"transfer-encoding":
                raise RuntimeError("chunked responses are not read by this client")
        if length is None:
            raise RuntimeError("a response without content-length")
        while len(self.buffer) < length:
            self._more()
        self.body, self.buffer = self.buffer[:length], self.buffer[length:]
        return status

    def _more(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self.buffer += chunk

    def close(self) -> None:
        self.sock.close()


def load(url: str, path: str, body: bytes, mode: str, seconds: float, warmup: float) -> dict[str, Any]:
    """``seq``: one connection, latencies; ``conc``: CONNECTIONS connections, requests/s."""
    if mode == "seq":
        conn = Connection(url, path, body)
        latencies: list[float] = []
        errors = 0
        end_warm = time.perf_counter() + warmup
        while time.perf_counter() < end_warm:
            conn.post()
        end = time.perf_counter() + seconds
        while True:
            t0 = time.perf_counter()
            if t0 >= end:
                break
            status = conn.post()
            latencies.append(time.perf_counter() - t0)
            errors += status != 200
        conn.close()
        latencies.sort()
        return {"count": len(latencies), "errors": errors, "p50_ms": _q(latencies, 0.5) * 1000,
                "p99_ms": _q(latencies, 0.99) * 1000}
    counts = [0] * CONNECTIONS
    sent = [0] * CONNECTIONS
    failed = [0] * CONNECTIONS
    start = time.perf_counter() + warmup
    end = start + seconds

    def worker(i: int) -> None:
        conn = Connection(url, path, body)
        while True:
            now = time.perf_counter()
            if now >= end:
                break
            status = conn.post()
            sent[i] += 1
            if time.perf_counter() >= start and now >= start:
                counts[i] += 1
                failed[i] += status != 200
        conn.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(CONNECTIONS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"count": sum(counts), "sent": sum(sent), "errors": sum(failed), "req_per_s": sum(counts) / seconds}


def _q(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def run_load(c: Contender, mode: str, seconds: float, warmup: float) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "_load", c.url, c.path, mode, str(seconds), str(warmup)],
                         input=c.body, capture_output=True, check=True, timeout=seconds + warmup + 60)
    return dict(json.loads(out.stdout))


# --- the bare FastAPI app (its own process: `bench/serve.py _bare`) -----------------------------------

def bare_server(root: str, model: str) -> None:
    import numpy as np
    import orjson
    import uvicorn
    from fastapi import FastAPI, Request, Response
    from starlette.concurrency import run_in_threadpool

    from runyard.serve.handler import make_handler

    globals().update(Request=Request, Response=Response)  # the route's annotations are strings (__future__)
    handler = make_handler(Path(root), HANDLER)
    handler.load(model)
    app = FastAPI()

    @app.post("/predict")
    async def predict(request: Request) -> Response:
        body = orjson.loads(await request.body())
        output = await run_in_threadpool(handler.predict, {"image": np.asarray(body["image"])})
        return Response(orjson.dumps({"output": output}), media_type="application/json")

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "alive"}

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)
    print(sock.getsockname()[1], flush=True)
    # As runyard's server process configures uvicorn (serve/main.py).
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=30)
    uvicorn.Server(config).run(sockets=[sock])


# --- setting the contenders up ------------------------------------------------------------------------

def wait_answering(url: str, timeout: float = 120, proc: subprocess.Popen[bytes] | None = None) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server process ended ({proc.returncode}) before answering {url}")
        try:
            if httpx.get(url, timeout=2, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout:g} s")


@contextmanager
def process(argv: list[str], **kw: Any) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(argv, start_new_session=True, **kw)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def cli(env: dict[str, str], cwd: Path, *args: str) -> str:
    out = subprocess.run([RUNYARD, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise RuntimeError(f"runyard {' '.join(args)} -> {out.returncode}: {out.stderr[-2000:]}")
    return out.stdout


def train(env: dict[str, str], project: Path) -> int:
    number = int(json.loads(cli(env, project, "run", "--json", "--", sys.executable, "examples/digits/train.py")
                            )["number"])
    from runyard.api import Api
    from runyard.config import resolve

    api = Api(resolve(environ=env, cwd=project), catch_up=False)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            run = api.store.get_run(number)
            if run.status.is_terminal():
                if run.status.value != "finished":
                    raise RuntimeError(f"the training run ended {run.status.value}")
                return number
            time.sleep(0.1)
    finally:
        api.close()
    raise RuntimeError("the training run did not end within 300 s")


MLFLOW_SAVE = """
import sys
import mlflow.sklearn
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

# examples/digits/train.py, as it trains
digits = load_digits()
x_train, x_val, y_train, y_val = train_test_split(digits.data / 16.0, digits.target, test_size=0.25, random_state=0)
model = LogisticRegression(max_iter=2000).fit(x_train, y_train)
mlflow.sklearn.save_model(model, sys.argv[1], pyfunc_predict_fn="predict_proba")
"""


def mlflow_missing() -> str | None:
    python = PEER / "bin" / "python"
    if not python.exists():
        return "no .venv-peers/mlflow (make bench-peers)"
    check = subprocess.run([str(python), "-c", "import mlflow, sklearn"], capture_output=True, text=True)
    if check.returncode != 0:
        return "mlflow or scikit-learn does not import in .venv-peers/mlflow (rebuild it: make bench-peers)"
    return None


def start_mlflow(stack: ExitStack, d: Path) -> tuple[str | None, str]:
    """(URL, "") of a running `mlflow models serve`, or (None, why not)."""
    missing = mlflow_missing()
    if missing:
        return None, missing
    model = d / "mlflow-model"
    peer_env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNYARD_", "MLFLOW_"))}
    peer_env["PATH"] = f"{PEER / 'bin'}:{peer_env.get('PATH', '')}"
    saved = subprocess.run([str(PEER / "bin" / "python"), "-c", MLFLOW_SAVE, str(model)], env=peer_env,
                           capture_output=True, text=True, timeout=300)
    if saved.returncode != 0:
        return None, f"saving the model failed: {saved.stderr.strip().splitlines()[-1:]}"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(d / "mlflow-serve.log", "wb")  # noqa: SIM115 - closed with the stack
    stack.callback(log.close)
    proc = stack.enter_context(process(
        [str(PEER / "bin" / "mlflow"), "models", "serve", "-m", str(model), "--env-manager", "local",
         "-h", "127.0.0.1", "-p", str(port)], env=peer_env, stdout=log, stderr=subprocess.STDOUT))
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_answering(url + "ping", 180, proc)
    except RuntimeError as e:
        tail = (d / "mlflow-serve.log").read_text(errors="replace").strip().splitlines()[-1:]
        return None, f"{e} {tail}"
    return url, ""


def measure(args: argparse.Namespace) -> dict[str, Any]:
    from sklearn.datasets import load_digits

    from runyard.agent import stop_agents

    rounds = 1 if args.quick else 5
    seconds, warmup = (0.5, 0.2) if args.quick else (3.0, 0.5)
    rows = (255 - load_digits().images[0] / 16 * 255).round().astype(int)  # the handler's first example
    ink = ((255.0 - rows) / 255.0).reshape(-1).tolist()
    with tempfile.TemporaryDirectory(prefix="runyard-bench-") as tmp, ExitStack() as stack:
        d = Path(tmp)
        project = d / "project"
        shutil.copytree(ROOT / "examples" / "digits", project / "examples" / "digits")
        env = {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")}
        env["RUNYARD_HOME"] = str(d / "home")
        stack.callback(stop_agents, d / "home")
        number = train(env, project)
        cli(env, project, "cp", f"{number}:model/", str(d / "model"))

        served = json.loads(cli(env, project, "serve", f"{number}:model", "--handler", HANDLER, "--json"))
        stack.callback(lambda: cli(env, project, "stop", str(served["number"])))
        if not served.get("url"):
            raise RuntimeError(f"runyard serve printed no URL: {served}")

        bare = stack.enter_context(process([sys.executable, __file__, "_bare", str(project), str(d / "model")],
                                           stdout=subprocess.PIPE))
        assert bare.stdout is not None
        bare_url = f"http://127.0.0.1:{int(bare.stdout.readline())}/"
        wait_answering(bare_url + "health", 60, bare)

        image = json.dumps({"image": rows.tolist()}).encode()
        contenders = [Contender("runyard serve", served["url"], "/predict", image),
                      Contender("bare FastAPI (same handler, uvicorn)", bare_url, "/predict", image)]
        contenders[0].processes = _runyard_processes(served["url"], d / "home")
        contenders[1].processes = {"server": _process(bare.pid)}
        mlflow_url, why = (None, "skipped (--no-mlflow)") if args.no_mlflow else start_mlflow(stack, d)
        if mlflow_url:
            contenders.append(Contender("mlflow models serve (--env-manager local)", mlflow_url, "/invocations",
                                        json.dumps({"inputs": [ink]}).encode()))
        for c in contenders:  # every one answers, and answers the same digit
            answer = _one(c)
            scores = answer.get("output") or dict(enumerate(answer["predictions"][0]))
            top = max(scores, key=lambda k: scores[k])
            if str(top) != "0":
                raise RuntimeError(f"{c.name} predicts {top} for a 0: {answer}")

        for _ in range(rounds):
            for c in contenders:
                seq = run_load(c, "seq", seconds, warmup)
                cpu = _cpu(c.processes)
                conc = run_load(c, "conc", seconds, warmup)
                spent = {k: (v - cpu[k]) / conc["sent"] * 1e6 for k, v in _cpu(c.processes).items()}
                c.rounds.append({"p50_ms": seq["p50_ms"], "p99_ms": seq["p99_ms"], "requests": seq["count"],
                                 "req_per_s": conc["req_per_s"], "errors": seq["errors"] + conc["errors"],
                                 "cpu_us_per_request": spent})
    figures: dict[str, Any] = {
        "rounds": rounds, "seconds_per_phase": seconds, "connections": CONNECTIONS,
        "target_added_p50_ms": TARGET_ADDED_P50_MS,
        "contenders": {c.name: {
            "p50_ms": statistics.median(r["p50_ms"] for r in c.rounds),
            "p99_ms": statistics.median(r["p99_ms"] for r in c.rounds),
            "req_per_s": statistics.median(r["req_per_s"] for r in c.rounds),
            "errors": sum(r["errors"] for r in c.rounds),
            "cpu_us_per_request": {k: statistics.median(r["cpu_us_per_request"][k] for r in c.rounds)
                                   for k in c.processes},
            "rounds": c.rounds} for c in contenders},
        "mlflow": "measured" if mlflow_url else f"not measured: {why}",
        "loop_http": _loop_http(),
    }
    ours, base = contenders[0].rounds, contenders[1].rounds
    figures["added_p50_ms"] = statistics.median(a["p50_ms"] - b["p50_ms"] for a, b in zip(ours, base, strict=True))
    figures["throughput_ratio"] = statistics.median(a["req_per_s"] / b["req_per_s"]
                                                    for a, b in zip(ours, base, strict=True))
    figures["pass"] = figures["added_p50_ms"] <= TARGET_ADDED_P50_MS
    return figures


def _process(pid: int) -> Any:
    import psutil

    return psutil.Process(pid)


def _runyard_processes(url: str, home: Path) -> dict[str, Any]:
    """The serve run's server process, its supervisor (which keeps the server's log line per request)
    and the home's agent (which ingests them and the metrics): each costs CPU per request."""
    import psutil

    port = int(url.rstrip("/").rsplit(":", 1)[1])
    server = next((psutil.Process(c.pid) for c in psutil.net_connections("tcp")
                   if c.status == psutil.CONN_LISTEN and c.laddr.port == port and c.pid), None)
    if server is None:
        return {}
    found = {"server": server, "supervisor": server.parent()}
    for p in psutil.process_iter(["cmdline"]):
        try:
            if "runyard.agent" in (p.info["cmdline"] or []) and p.environ().get("RUNYARD_HOME") == str(home):
                found["agent"] = p
        except psutil.Error:
            continue
    return found


def _cpu(processes: dict[str, Any]) -> dict[str, float]:
    """CPU seconds (user + system) each process has used so far."""
    return {k: sum(p.cpu_times()[:2]) for k, p in processes.items()}


def _one(c: Contender) -> dict[str, Any]:
    conn = Connection(c.url, c.path, c.body)
    try:
        status = conn.post()
        if status != 200:
            raise RuntimeError(f"{c.name}: {status} {conn.body[:300]!r}")
        return dict(json.loads(conn.body))
    finally:
        conn.close()


def _loop_http() -> str:
    """What uvicorn's "auto" picks here (both servers run with it)."""
    import importlib.util

    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    return f"{loop} + {http}"


def print_table(figures: dict[str, Any]) -> None:
    rows = [("contender", f"req/s ({figures['connections']} conns)", "p50 ms", "p99 ms", "CPU us/req")]
    for name, f in figures["contenders"].items():
        cpu = f["cpu_us_per_request"]
        shown = " + ".join(f"{v:.0f} {k}" for k, v in cpu.items()) if len(cpu) > 1 else \
            (f"{next(iter(cpu.values())):.0f}" if cpu else "-")
        rows.append((name, f"{f['req_per_s']:.0f}", f"{f['p50_ms']:.2f}", f"{f['p99_ms']:.2f}", shown))
    if figures["mlflow"] != "measured":
        rows.append(("mlflow models serve", figures["mlflow"], "", "", ""))
    widths = [max(len(r[i]) for r in rows if i == 0 or len(r[1]) < 40) for i in range(5)]
    for r in rows:
        if len(r[1]) >= 40:
            print(f"{r[0]:<{widths[0]}}  {r[1]}")
        else:
            print(f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]:>{widths[3]}}  {r[4]}")
    added = figures["added_p50_ms"]
    print(f"\nrunyard serve's added p50 over bare FastAPI (median of {figures['rounds']} interleaved rounds): "
          f"{added:.3f} ms, target <= {TARGET_ADDED_P50_MS:g} ms: {'PASS' if figures['pass'] else 'FAIL'}")
    print(f"runyard serve's throughput / bare FastAPI's: {figures['throughput_ratio']:.2f} "
          f"(uvicorn: {figures['loop_http']}; {figures['seconds_per_phase']:g} s per phase)")


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "_load":
        url, path, mode, seconds, warmup = sys.argv[2:7]
        print(json.dumps(load(url, path, sys.stdin.buffer.read(), mode, float(seconds), float(warmup))))
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "_bare":
        bare_server(sys.argv[2], sys.argv[3])
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one short round")
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    parser.add_argument("--no-mlflow", action="store_true", help="leave mlflow models serve out")
    args = parser.parse_args()
    figures = measure(args)
    print_table(figures)
    if args.json:
        print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
