"""``runyard serve --on ray``: the same handler and ASGI app as a Ray Serve application.

The serve run stays a run on this machine; its command (``serve.main --ray-replicas N``) is the
application's *driver*: it connects to the cluster runyard is configured for, runs
``serve.run(app, name=NAME, route_prefix="/NAME")``, waits until every replica's ``load()``
returned, writes the proxy's address to ``serve.json``, logs the replicas' request counts as the
run's ``serve/...`` metrics, and deletes the application on SIGTERM (``runyard stop``).

Each replica builds its own handler and ``ModelServer`` (``build_app``, via ``serve.ingress`` with
a builder) in the serve run's work directory, shipped as the replicas' ``runtime_env``
``working_dir`` (the code snapshot and ``served-model/``), and loads it in a thread, so ``/ready``
is 503 until ``load()`` returned. Replicas send what each request took to one actor per served
name (``StatsSink``, owned by the driver, so it ends with it); the driver flushes it every window.
Ray is imported here only, never by ``import runyard`` or the CLI.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from runyard.errors import ConfigError
from runyard.serve.stats import Stats

if TYPE_CHECKING:
    import argparse

    from runyard.serve.handler import Handler

#: The Ray namespace of runyard's actors (the stats sinks).
NAMESPACE = "runyard"
#: The deployment's name inside each application (the application is the served name).
DEPLOYMENT = "model"
#: Ray Serve's HTTP port when ``--port`` is not given (Ray's own default).
DEFAULT_PORT = 8000
#: Seconds the replicas may take to load before the driver gives up.
LOAD_TIMEOUT = 600.0
#: Most request records a replica holds while the sink is unreachable.
MAX_PENDING = 50_000


def sink_name(name: str) -> str:
    return f"runyard-serve-stats-{name}"


def driver_address(setting: str | None) -> str:
    """Where ``ray.init`` connects the driver: ``RAY_ADDRESS`` when it names a cluster (a GCS
    address or ``ray://`` client address), else the ``ray`` setting; a dashboard address
    (``http://HEAD:8265``, what runs go through) is the head on this machine, whose GCS address
    its dashboard process names."""
    env = os.environ.get("RAY_ADDRESS", "").strip()
    if env and not env.startswith(("http://", "https://")):
        return env
    if not setting:
        raise ConfigError("--on ray serves on the Ray cluster of the ray setting: set ray = \"http://HEAD:8265\" "
                          "(RUNYARD_RAY), or RAY_ADDRESS=ray://HEAD:10001 for a cluster this machine is not part of")
    if not setting.startswith(("http://", "https://")):
        return setting
    port = urlsplit(setting).port
    found = _local_gcs(port) if port is not None else None
    if found is None:
        raise ConfigError(f"ray = {setting!r} is a dashboard, and no Ray head on this machine has its dashboard on "
                          f"port {port}: a Ray Serve application's driver connects to the cluster itself; run "
                          "runyard serve on the head, or set RAY_ADDRESS=ray://HEAD:10001 (Ray Client)")
    return found


def _local_gcs(dashboard_port: int) -> str | None:
    """The GCS address of the head on this machine whose dashboard listens on ``dashboard_port``."""
    import psutil

    for process in psutil.process_iter(["cmdline"]):
        try:
            cmdline = process.info["cmdline"] or []
        except psutil.Error:
            continue
        if not any(part.endswith("dashboard/dashboard.py") for part in cmdline):
            continue
        if f"--port={dashboard_port}" not in cmdline:
            continue
        for part in cmdline:
            if part.startswith("--gcs-address="):
                return str(part.split("=", 1)[1])
    return None


# -- in the cluster --------------------------------------------------------------------------------


class StatsSink:
    """One actor per served name: the replicas' requests, one ``Stats`` for all of them, and which
    replicas have loaded their model (or failed to)."""

    def __init__(self) -> None:
        self.stats = Stats()
        self.loads: dict[str, str | None] = {}

    def record(self, batch: list[tuple[float, int]]) -> None:
        for seconds, status in batch:
            self.stats.record(seconds, status)

    def loaded(self, replica: str, failed: str | None) -> None:
        self.loads[replica] = failed

    def flush(self) -> dict[str, float]:
        return self.stats.flush()

    def replicas(self) -> dict[str, str | None]:
        return dict(self.loads)


class Forwarder(Stats):
    """A replica's ``Stats``: requests are batched and sent to the served name's ``StatsSink``."""

    def __init__(self, name: str, every: float) -> None:
        super().__init__()
        self.name, self.every = name, every
        self._pending: list[tuple[float, int]] = []
        self._sink: Any = None

    def record(self, seconds: float, status: int) -> None:
        with self._lock:
            if len(self._pending) < MAX_PENDING:
                self._pending.append((seconds, status))

    def start(self) -> None:
        threading.Thread(target=self._loop, name="runyard-serve-forward", daemon=True).start()

    def _loop(self) -> None:
        while True:
            time.sleep(self.every)
            with self._lock:
                batch, self._pending = self._pending, []
            if batch and not self._send("record", batch):
                with self._lock:  # the sink is away for now: keep them for the next window
                    self._pending = (batch + self._pending)[:MAX_PENDING]

    def _send(self, method: str, *args: Any) -> bool:
        import ray

        try:
            if self._sink is None:
                self._sink = ray.get_actor(sink_name(self.name), namespace=NAMESPACE)
            getattr(self._sink, method).remote(*args)
            return True
        except Exception:  # noqa: BLE001 - the driver gone or not yet there: counting never breaks serving
            self._sink = None
            return False

    def loaded(self, replica: str, failed: str | None) -> None:
        for _ in range(30):
            if self._send("loaded", replica, failed):
                return
            time.sleep(1.0)


def replica_builder(handler_ref: str, model: str, name: str, version: str, log_inputs: bool, max_body: int,
                    every: float) -> Any:
    """What each replica calls to make its ASGI app (``serve.ingress`` with a builder): its own
    handler and ModelServer in its working directory, loaded in a thread."""

    def build() -> Any:
        from runyard.serve.app import ModelServer, build_app
        from runyard.serve.handler import make_handler

        handler = make_handler(Path.cwd(), handler_ref)
        forwarder = Forwarder(name, every)
        server = ModelServer(handler, str(Path(model).resolve()), version=version, log_inputs=log_inputs,
                             max_body=max_body)
        server.stats = forwarder
        replica = uuid.uuid4().hex[:12]

        def load() -> None:
            server.load()
            forwarder.loaded(replica, server.failed)

        forwarder.start()
        threading.Thread(target=load, name="runyard-serve-load", daemon=True).start()
        return build_app(server)

    return build


# -- the driver ------------------------------------------------------------------------------------


def run_driver(args: argparse.Namespace, handler: Handler, model: Path, say: Any = print) -> int:
    """Deploy, wait for the loads, publish the URL, count, and delete the application on SIGTERM."""
    try:
        if args.ray_address:
            address = args.ray_address
        else:
            from runyard.config import resolve

            address = driver_address(resolve().ray)
    except ConfigError as e:
        print(f"runyard: error: {e}", file=sys.stderr)
        return 2
    if address.rpartition(":")[0] in ("127.0.0.1", "localhost", "[::1]"):
        # A head on loopback (ray start --node-ip-address 127.0.0.1) answers there only, but Ray rewrites
        # a loopback address to this machine's IP unless told it is a single-machine cluster; read by
        # Ray at import, in this process, which is the driver and nothing else.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
        from ray import serve
    except ImportError as e:
        print(f"runyard: error: --on ray needs Ray Serve in the serve run's Python ({e}): "
              "pip install 'runyard[ray]'", file=sys.stderr)
        return 2
    from runyard._version import __version__
    from runyard.serve.app import MAX_BODY
    from runyard.serve.connection import serve_file
    from runyard.serve.main import _attach, _print_metrics
    from runyard.serve.stats import WINDOW, Reporter

    name = args.name or "model"
    replicas = int(args.ray_replicas)
    every = float(os.environ.get("RUNYARD_SERVE_WINDOW") or WINDOW)
    stop = threading.Event()
    # The job's working_dir is uploaded by ray.init, and Serve gives it to the replicas (a local path in
    # a deployment's own runtime_env is not uploaded).
    connecting = time.monotonic()
    ray.init(address=address, namespace=NAMESPACE, logging_level=logging.WARNING, log_to_driver=False,
             runtime_env={"working_dir": str(Path.cwd()), "excludes": ["outputs/", ".git/", "__pycache__/"]})
    say(f"connected to the Ray cluster at {address} in {time.monotonic() - connecting:.1f} s "
        "(the code and the model uploaded as the replicas' working_dir)")
    # After ray.init, which sets its own SIGTERM handler (an exit): runyard stop deletes the app first.
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    home, run_id = os.environ.get("RUNYARD_HOME"), os.environ.get("RUNYARD_RUN_ID")
    sink: Any = None
    reporter: Reporter | None = None
    deployed = False
    code = 0
    try:
        old = _existing_sink(ray, name)
        if old is not None:  # a driver of the same name that died hard: its sink is stale
            ray.kill(old)
        sink = ray.remote(StatsSink).options(name=sink_name(name), namespace=NAMESPACE, num_cpus=0).remote()
        starting = time.monotonic()
        serve.start(http_options={"host": args.host, "port": args.port or DEFAULT_PORT})
        say(f"Ray Serve answers in {time.monotonic() - starting:.1f} s")
        options: dict[str, Any] = {}
        if args.ray_gpus:
            options["num_gpus"] = args.ray_gpus
        build = replica_builder(args.handler, str(model), name, __version__, args.log_inputs,
                                args.max_body or MAX_BODY, min(every, 1.0))
        deployment = serve.deployment(name=DEPLOYMENT, num_replicas=replicas,
                                      ray_actor_options=options)(serve.ingress(build)())
        started = time.monotonic()
        say(f"deploying {handler.signature.title} to Ray Serve as {name!r}: {replicas} replica(s) at {address}")
        deployed = True
        try:
            serve.run(deployment.bind(), name=name, route_prefix=f"/{name}", blocking=False)
        except RuntimeError as e:  # the replicas failed to start: Ray Serve's reason, which names theirs
            print(f"runyard: Ray Serve could not deploy {name!r}: {e}\n{_why(serve, name)}", file=sys.stderr,
                  flush=True)
            return 1
        failed = _wait_for_loads(ray, sink, replicas, stop)
        if failed:
            print(f"runyard: the handler's load() raised in a replica: {failed}: the application is deleted",
                  file=sys.stderr, flush=True)
            return 1
        if stop.is_set():
            return 0
        host, port = _http_address(serve, args.host, args.port or DEFAULT_PORT)
        from runyard.wire import url_host

        url = f"http://{url_host(host)}:{port}/{name}/"
        inputs = ", ".join(f"{f.name} ({f.type})" for f in handler.signature.inputs)
        say(f"serving {handler.signature.title} at {url} on Ray Serve ({replicas} replica(s) ready in "
            f"{time.monotonic() - started:.1f} s): inputs {inputs}, output {handler.signature.output}")
        run = _attach()
        reporter = Reporter(_SinkStats(ray, sink), _skip_empty(run.log if run is not None else _print_metrics),
                            every)
        reporter.start()
        if home and run_id:
            from runyard.notebook.connection import write_connection

            write_connection(serve_file(Path(home), run_id), {
                "url": url, "host": host, "port": port, "pid": os.getpid(), "name": name, "on": "ray",
                "replicas": replicas})
        while not stop.wait(2.0):
            if name not in serve.status().applications:
                print(f"runyard: the Ray Serve application {name!r} is gone from the cluster: the server stops",
                      file=sys.stderr, flush=True)
                code = 1
                break
        return code
    finally:
        if home and run_id:
            serve_file(Path(home), run_id).unlink(missing_ok=True)
        if reporter is not None:
            reporter.stop()
        if deployed:
            try:
                serve.delete(name)
                say(f"deleted the Ray Serve application {name!r}")
            except Exception as e:  # noqa: BLE001 - said, and the run ends all the same
                print(f"runyard: could not delete the Ray Serve application {name!r}: {e}", file=sys.stderr)
        if sink is not None:
            with contextlib.suppress(Exception):  # it ends with the driver anyway
                ray.kill(sink)
        ray.shutdown()


def _why(serve: Any, name: str) -> str:
    try:
        app = serve.status().applications[name]
    except Exception:  # noqa: BLE001 - only for the message
        return ""
    return "\n".join([app.message, *(d.message for d in app.deployments.values())]).strip()


def _existing_sink(ray: Any, name: str) -> Any:
    try:
        return ray.get_actor(sink_name(name), namespace=NAMESPACE)
    except ValueError:
        return None


def _wait_for_loads(ray: Any, sink: Any, replicas: int, stop: threading.Event) -> str | None:
    """None once ``replicas`` replicas have loaded their model; the first failure otherwise."""
    deadline = time.monotonic() + LOAD_TIMEOUT
    while not stop.is_set():
        loads = ray.get(sink.replicas.remote(), timeout=30)
        failures = [f for f in loads.values() if f is not None]
        if failures:
            return str(failures[0])
        if len(loads) >= replicas:
            return None
        if time.monotonic() > deadline:
            return f"not every replica loaded within {LOAD_TIMEOUT:g} s"
        stop.wait(0.25)
    return None


def _http_address(serve: Any, host: str, port: int) -> tuple[str, int]:
    """The host and port of Serve's HTTP proxies: the cluster's, which may predate this driver."""
    try:
        from ray.serve.context import _get_global_client

        config = _get_global_client().http_config  # type: ignore[union-attr] # no public accessor for it
        host, port = str(config.host), int(config.port)
    except Exception:  # noqa: BLE001, S110 - an older or newer Ray: what was asked
        pass
    if host in ("0.0.0.0", "::"):  # noqa: S104 - naming, not binding
        import ray

        host = str(ray.util.get_node_ip_address())  # type: ignore[no-untyped-call]
    return host, port


class _SinkStats(Stats):
    """The sink's window, as ``Reporter`` flushes a Stats."""

    def __init__(self, ray: Any, sink: Any) -> None:
        super().__init__()
        self.ray, self.sink = ray, sink

    def flush(self) -> dict[str, float]:
        try:
            return dict(self.ray.get(self.sink.flush.remote(), timeout=10))
        except Exception:  # noqa: BLE001 - the cluster away for a window: nothing logged this time
            return {}


def _skip_empty(sink: Any) -> Any:
    def log(metrics: dict[str, float]) -> None:
        if metrics:
            sink(metrics)
    return log
