"""Abuse benchmark: the server's memory and health-check latency while 20 clients send the largest
bodies its caps allow (issue 14, items 5 and 6).

    python bench/abuse.py             # 20 s of abuse, prints a table
    python bench/abuse.py --quick     # 5 s, smaller uploads: checks the benchmark itself runs
    python bench/abuse.py --json      # also print the figures as JSON

One `runyard server` process on SQLite that requires tokens (a writer and four readers exist before
it starts). For the whole run, 20 client threads of this process, each on its own connection:
  - 6 send deflated ingest bombs, one after another, alternately 63 MB of msgpack nils in 60 KB
    (past the 32 MiB the server inflates) and 30 MB of nils in 30 KB (within it, but 30 million values);
  - 2 send 2 MiB JSON bodies of empty lists (the largest JSON body taken; ~20 times its size decoded,
    and parsed by FastAPI on the event loop);
  - 8 upload blobs as msgpack bin values (the content type that used to be read whole into memory),
    256 MiB each (32 MiB with --quick), without a Content-Length, one after another;
  - 4 open 50 live-event streams each (200, the server's cap) and leave them idle (opened before the
    others start, and before the measurement).
The health checks are also timed for 3 s before the abuse begins (200 streams open), which shows how
busy the machine is without it. Meanwhile the server's resident memory is sampled every 50 ms (/proc/PID/status), and
/api/health is asked every 100 ms on a connection of its own, from a process of its own: its latency
is the figure a load balancer or `runyard ui` would see. (Until 2026-12-01 the checks ran in a
thread of this process, beside the 16 busy client threads, and also timed how long that thread
waited for the interpreter's lock; `--probe-in-process` measures that way again.)
Targets: peak RSS under 1 GB, health p99 within 200 ms, no
health check failing. The answers the abusers got are counted (413: refused by a cap; 503 with
Retry-After: no slot free; 200: an upload stored).
"""

from __future__ import annotations

# This folder holds logging.py (the name the issue gives the logging benchmark), which would shadow the
# standard library's logging module (httpx uses it) for any script run from here: take the folder off the path.
import sys
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]


import argparse
import hashlib
import json
import os
import signal
import socket
import statistics
import subprocess
import tempfile
import threading
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field

import httpx
import msgpack

RSS_TARGET_MB = 1024
P99_TARGET_MS = 200.0
RUN_ID = "01HZZZZZZZZZZZZZZZZZZZZZZZ"
MIB = 1 << 20


@dataclass
class Served:
    url: str
    port: int
    pid: int
    writer: str
    readers: list[str]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")}
    env.update({"RUNYARD_HOME": str(tmp / "home"), "RUNYARD_DB": f"sqlite:///{tmp / 'home' / 'bench.db'}",
                "RUNYARD_SYSTEM_INTERVAL": "0"})
    return env


@contextmanager
def server(tmp: Path) -> Iterator[Served]:
    from runyard.config import resolve
    from runyard.store.home import open_store
    from runyard.store.tokens import Tokens

    opened = open_store(resolve(environ=server_env(tmp), cwd=tmp))
    try:
        tokens = Tokens(opened.store)
        writer = tokens.create("writer", name="abuser")[1]
        readers = [tokens.create("reader", name=f"watcher-{n}")[1] for n in range(5)]
    finally:
        opened.close()
    port = free_port()
    log_path = tmp / "server.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "runyard.cli.main", "server", "--port", str(port)],
                                env=server_env(tmp), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True, cwd=str(tmp))
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited: {log_path.read_text()[-2000:]}")
            with suppress(httpx.HTTPError):
                if httpx.get(f"{url}/api/health", headers=auth(readers[0]), timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.1)
        yield Served(url, port, proc.pid, writer, readers)
    finally:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def auth(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


# -- the abusers -------------------------------------------------------------------------------------


@dataclass
class Tally:
    answers: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, what: str) -> None:
        with self.lock:
            self.answers[what] += 1


def bombs() -> list[bytes]:
    def bomb(arrays: int) -> bytes:
        return zlib.compress(msgpack.packb({"run_id": RUN_ID, "writer": "w1", "items": [[None] * 100_000] * arrays}), 9)

    return [bomb(630), bomb(300)]


def ingest_bomber(served: Served, stop: threading.Event, tally: Tally, bodies: list[bytes]) -> None:
    headers = {**auth(served.writer), "content-type": "application/msgpack", "content-encoding": "deflate"}
    with httpx.Client(timeout=60) as client:
        n = 0
        while not stop.is_set():
            try:
                answer = client.post(f"{served.url}/api/v1/ingest", content=bodies[n % len(bodies)], headers=headers)
                tally.add(f"ingest bomb {answer.status_code}")
            except httpx.HTTPError as e:
                tally.add(f"ingest bomb {type(e).__name__}")
            n += 1


def json_bomber(served: Served, stop: threading.Event, tally: Tally) -> None:
    body = b'{"sha256": [' + b",".join([b"[]"] * (((2 * MIB) - 20) // 3)) + b"]}"
    headers = {**auth(served.writer), "content-type": "application/json"}
    with httpx.Client(timeout=60) as client:
        while not stop.is_set():
            try:
                answer = client.post(f"{served.url}/api/v1/blobs/missing", content=body, headers=headers)
                tally.add(f"JSON bomb {answer.status_code}")
            except httpx.HTTPError as e:
                tally.add(f"JSON bomb {type(e).__name__}")


def uploader(served: Served, stop: threading.Event, tally: Tally, size: int, seed: int) -> None:
    block = hashlib.sha256(str(seed).encode()).digest() * (MIB // 32)
    content_sha = hashlib.sha256()
    for _ in range(size // MIB):
        content_sha.update(block)
    sha = content_sha.hexdigest()

    def body() -> Iterator[bytes]:  # no Content-Length: the server learns the size while reading
        yield b"\xc6" + size.to_bytes(4, "big")
        for _ in range(size // MIB):
            if stop.is_set():
                return
            yield block

    headers = {**auth(served.writer), "content-type": "application/msgpack"}
    with httpx.Client(timeout=120) as client:
        while not stop.is_set():
            try:
                answer = client.put(f"{served.url}/api/v1/blobs/{sha}", content=body(), headers=headers)
                if stop.is_set():
                    break  # cut short when the benchmark ended: refused as incomplete, not counted
                tally.add(f"upload {answer.status_code}")
                if answer.status_code == 503:
                    time.sleep(float(answer.headers.get("retry-after", "1")))
            except httpx.HTTPError as e:
                tally.add(f"upload {type(e).__name__}")


def stream_holder(served: Served, stop: threading.Event, tally: Tally, token: str, count: int,
                  opened: threading.Barrier) -> None:
    sockets = []
    try:
        for _ in range(count):
            s = socket.create_connection(("127.0.0.1", served.port), timeout=30)
            s.sendall(f"GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1:{served.port}\r\n"
                      f"Authorization: Bearer {token}\r\n\r\n".encode())
            sockets.append(s)
        for s in sockets:
            head = s.recv(4096)
            tally.add(f"stream {head[9:12].decode() or 'closed'}")
        opened.wait()
        stop.wait()
    finally:
        for s in sockets:
            s.close()


# -- the measurement ---------------------------------------------------------------------------------


def probe(health: httpx.Client, url: str, seconds: float) -> tuple[list[float], Counter[str]]:
    """Ask ``url`` every 100 ms for ``seconds``: each answer's latency (ms), and the failures."""
    latencies: list[float] = []
    failures: Counter[str] = Counter()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.perf_counter()
        try:
            answer = health.get(url)
            if answer.status_code != 200:
                failures[str(answer.status_code)] += 1
        except httpx.HTTPError as e:
            failures[type(e).__name__] += 1
        latencies.append((time.perf_counter() - started) * 1000)
        time.sleep(0.1)
    return latencies, failures


def probe_main(url: str, token: str, seconds: float) -> int:
    """The prober's process: 3 s of checks, a line saying so (the abuse starts), then ``seconds``
    more; prints the latencies as JSON."""
    with httpx.Client(timeout=10, headers=auth(token)) as health:
        calm, calm_failures = probe(health, f"{url}/api/health", 3.0)
        print("calm done", flush=True)
        latencies, failures = probe(health, f"{url}/api/health", seconds)
    print(json.dumps({"calm": calm, "latencies": latencies, "failures": dict(failures + calm_failures)}))
    return 0


def abuse(seconds: float, upload_size: int, in_process: bool = False) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="runyard-abuse-") as tmp_name, server(Path(tmp_name)) as served:
        stop, tally = threading.Event(), Tally()
        idle_rss = rss_mb(served.pid)
        bodies = bombs()
        clients = [threading.Thread(target=ingest_bomber, args=(served, stop, tally, bodies)) for _ in range(6)]
        clients += [threading.Thread(target=json_bomber, args=(served, stop, tally)) for _ in range(2)]
        clients += [threading.Thread(target=uploader, args=(served, stop, tally, upload_size, n)) for n in range(8)]
        opened = threading.Barrier(5)
        clients += [threading.Thread(target=stream_holder, args=(served, stop, tally, served.readers[n], 50, opened))
                    for n in range(4)]
        assert len(clients) == 20
        rss: list[float] = []

        def sample_rss() -> None:
            while not stop.is_set():
                rss.append(rss_mb(served.pid))
                time.sleep(0.05)

        sampler = threading.Thread(target=sample_rss)
        sampler.start()
        for c in clients[-4:]:  # the streams first: they are opened, then left idle while the others abuse
            c.start()
        opened.wait(60)
        calm: list[float] = []
        if in_process:
            with httpx.Client(timeout=10, headers=auth(served.readers[4])) as health:
                calm, calm_failures = probe(health, f"{served.url}/api/health", 3.0)
                for c in clients[:-4]:
                    c.start()
                latencies, failures = probe(health, f"{served.url}/api/health", seconds)
                failures += calm_failures
        else:
            # The prober is a process of its own, as a load balancer is: it waits for no lock of ours.
            prober = subprocess.Popen([sys.executable, __file__, "--probe", served.url, served.readers[4],
                                       str(seconds)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            assert prober.stdout is not None
            assert prober.stdout.readline().strip() == "calm done"  # 3 s of checks before the abuse
            for c in clients[:-4]:
                c.start()
            out, err = prober.communicate(timeout=seconds + 120)
            if prober.returncode != 0:
                raise RuntimeError(f"the health prober failed: {err[-2000:]}")
            measured = json.loads(out)
            calm, latencies, failures = measured["calm"], measured["latencies"], Counter(measured["failures"])
        stop.set()
        for c in [*clients, sampler]:
            c.join(60)
        latencies.sort()
        calm.sort()
        return {"seconds": seconds, "upload_mib": upload_size // MIB, "idle_rss_mb": round(idle_rss, 1),
                "peak_rss_mb": round(max(rss), 1), "health_checks": len(latencies),
                "health_p50_ms": round(statistics.median(latencies), 1),
                "health_p99_ms": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 1),
                "health_max_ms": round(latencies[-1], 1), "health_failures": dict(failures),
                "calm_p50_ms": round(statistics.median(calm), 1),
                "calm_p99_ms": round(calm[min(len(calm) - 1, int(len(calm) * 0.99))], 1),
                "answers": dict(sorted(tally.answers.items()))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="5 s and 32 MiB uploads")
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    parser.add_argument("--probe-in-process", action="store_true",
                        help="time the health checks from a thread of this process, beside the abusers "
                             "(the method used until 2026-12-01)")
    parser.add_argument("--probe", nargs=3, metavar=("URL", "TOKEN", "SECONDS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        return probe_main(args.probe[0], args.probe[1], float(args.probe[2]))
    figures = abuse(5.0 if args.quick else 20.0, (32 if args.quick else 256) * MIB, args.probe_in_process)
    peak, p99 = float(figures["peak_rss_mb"]), float(figures["health_p99_ms"])  # type: ignore[arg-type]
    failed = sum(figures["health_failures"].values())  # type: ignore[attr-defined]
    rows = [
        ("server RSS, peak (idle: {idle_rss_mb} MB)".format(**figures), f"< {RSS_TARGET_MB} MB", f"{peak:.0f} MB",
         "met" if peak < RSS_TARGET_MB else "NOT MET"),
        ("/api/health latency, p99 (p50 {health_p50_ms} ms, max {health_max_ms} ms; before the abuse: "
         "p50 {calm_p50_ms} ms, p99 {calm_p99_ms} ms)".format(**figures),
         f"<= {P99_TARGET_MS:.0f} ms", f"{p99:.0f} ms", "met" if p99 <= P99_TARGET_MS else "NOT MET"),
        (f"/api/health failures (of {figures['health_checks']})", "0", str(failed), "met" if not failed else "NOT MET"),
    ]
    rows += [(f"  abusers' answers: {what}", "", str(count), "") for what, count in figures["answers"].items()]  # type: ignore[attr-defined]
    width = max(len(r[0]) for r in rows)
    print(f"20 clients for {figures['seconds']:g} s: 6 ingest bombs, 2 JSON bombs, 8 uploads of "
          f"{figures['upload_mib']} MiB (msgpack), 200 idle streams; health checked from "
          + ("a thread beside the abusers" if args.probe_in_process else "a process of its own"))
    print(f"{'benchmark':<{width}}  {'target':<10}  {'measured':<10}  result")
    for r in rows:
        print(f"{r[0]:<{width}}  {r[1]:<10}  {r[2]:<10}  {r[3]}")
    if args.json:
        print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
