"""What a model server runs: ``python -m runyard.serve.main --handler serve.py:Model --model DIR``.

In a runyard run (``runyard serve``), in the code of the run that trained the model: it listens
on loopback (``--host`` to change it), writes where it answers to ``serve.json`` in the run's
directory (read by ``runyard serve``, ``runyard ps`` and the server's ``/serve/NAME/``), logs its
request counts and latency as the run's metrics every ``stats.WINDOW`` seconds, and a line per
request to its log. Outside a run (a container of ``--export k8s``) it serves the same, printing
its metrics instead. It stops on SIGTERM (``runyard stop``), answering requests in flight first.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import threading
from pathlib import Path
from typing import Any

from runyard.serve.connection import serve_file


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m runyard.serve.main",
                                     description="Serve a model with its handler (see `runyard serve --help`).")
    parser.add_argument("--handler", required=True, help="FILE.py:Class in the current directory's code")
    parser.add_argument("--model", required=True, help="the model's directory (or file), given to load()")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback)")
    parser.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    parser.add_argument("--name", default="", help="the name it is served under")
    parser.add_argument("--log-inputs", action="store_true", help="write each request's inputs to the log")
    parser.add_argument("--max-body", type=int, default=None, help="largest request body in bytes")
    parser.add_argument("--ray-replicas", type=int, default=None,
                        help="deploy to the configured Ray cluster as a Ray Serve application of N replicas")
    parser.add_argument("--ray-address", default=None,
                        help="the cluster's address for ray.init (default: RAY_ADDRESS, else the ray setting)")
    parser.add_argument("--ray-gpus", type=float, default=0, help="GPUs of each Ray Serve replica")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if hasattr(sys.stdout, "reconfigure"):  # a request's line reaches the run's log at once
        sys.stdout.reconfigure(line_buffering=True)
    from runyard.errors import InvalidArgument
    from runyard.serve.app import MAX_BODY, ModelServer, build_app
    from runyard.serve.handler import make_handler
    from runyard.serve.stats import WINDOW, Reporter

    try:
        handler = make_handler(Path.cwd(), args.handler)
    except InvalidArgument as e:
        print(f"runyard: error: {e}", file=sys.stderr)
        return 2
    model = Path(args.model)
    if not model.exists():
        print(f"runyard: error: --model {args.model}: no such file or directory", file=sys.stderr)
        return 2
    if args.ray_replicas is not None:  # a Ray Serve application, this process its driver (serve/ray_app.py)
        from runyard.serve.ray_app import run_driver

        return run_driver(args, handler, model)
    from runyard._version import __version__

    server = ModelServer(handler, str(model.resolve()), version=__version__, log_inputs=args.log_inputs,
                         max_body=args.max_body or MAX_BODY)
    try:
        sock = _listen(args.host, args.port)
    except OSError as e:
        print(f"runyard: error: cannot listen on {args.host}:{args.port}: {e.strerror or e}", file=sys.stderr)
        return 2
    port = sock.getsockname()[1]
    from runyard.wire import url_host

    url = f"http://{url_host(args.host)}:{port}/"
    run = _attach()
    every = float(os.environ.get("RUNYARD_SERVE_WINDOW") or WINDOW)  # seconds per point of its metrics
    reporter = Reporter(server.stats, run.log if run is not None else _print_metrics, every)
    home, run_id = os.environ.get("RUNYARD_HOME"), os.environ.get("RUNYARD_RUN_ID")
    inputs = ", ".join(f"{f.name} ({f.type})" for f in handler.signature.inputs)
    print(f"serving {handler.signature.title} at {url}: inputs {inputs}, output {handler.signature.output}")

    def load_then_announce() -> None:
        if not server.load():
            print("runyard: the handler's load() raised: the server stops", file=sys.stderr, flush=True)
            uvicorn_server.should_exit = True
            failed["load"] = True
            return
        if home and run_id:  # after the load: a served URL is one that answers
            from runyard.notebook.connection import write_connection

            write_connection(serve_file(Path(home), run_id), {
                "url": url, "host": args.host, "port": port, "pid": os.getpid(), "name": args.name})

    import uvicorn

    config = uvicorn.Config(build_app(server), log_level="warning", access_log=False, lifespan="off",
                            timeout_graceful_shutdown=30)
    uvicorn_server = uvicorn.Server(config)
    failed = {"load": False}
    reporter.start()
    threading.Thread(target=load_then_announce, name="runyard-serve-load", daemon=True).start()
    try:
        uvicorn_server.run(sockets=[sock])
    finally:
        reporter.stop()
        if home and run_id:
            serve_file(Path(home), run_id).unlink(missing_ok=True)
    return 1 if failed["load"] else 0


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError:
        sock.close()
        raise
    sock.listen(2048)
    return sock


def _attach() -> Any:
    """The run this server is (``runyard serve``), or None outside runyard."""
    if not os.environ.get("RUNYARD_RUN_ID"):
        return None
    import runyard

    return runyard.init()


def _print_metrics(metrics: dict[str, float]) -> None:
    """Outside a run (a container): a JSON line per window that saw requests, for its log collector."""
    if not metrics.get("serve/requests_per_s"):
        return
    print(json.dumps({"serve": {k.removeprefix("serve/"): round(v, 3) for k, v in metrics.items()}}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
