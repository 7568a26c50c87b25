"""``runyard serve``'s run: a run of kind ``serve`` on the code and environment of the run that
trained the model, with that run's artifacts mounted as the model directory.

The serve run is a child of the training run (its ``parent``): the same snapshot (the handler is
the code that trained the model, as submitted), the same packages (``--pip`` adds to them), and
its own command, ``python -m runyard.serve.main``. Built here for the CLI on this machine and for
the server's ``POST /runs/{ref}/serve`` alike.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from runyard.errors import InvalidArgument, NotFound
from runyard.types import RunKind

#: The module a serve run's Python runs (``runyard.serve.main``).
SERVE_MODULE = "runyard.serve.main"
#: Where the model's files are mounted in the serve run's directory: what ``load()`` is given.
MODEL_DIRECTORY = "served-model"
#: A served name: a path segment of ``/serve/NAME/`` and a DNS label of an export.
SERVE_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


@dataclass(frozen=True)
class ServeRequest:
    """What ``runyard serve`` was asked, checked."""

    handler: str
    name: str
    #: The artifacts of the training run that are the model: a file or a directory ("" = all).
    path: str = ""
    port: int = 0
    host: str = "127.0.0.1"
    pip: tuple[str, ...] = ()
    gpus: int | None = None
    log_inputs: bool = False
    #: "local", or "ray" (a Ray Serve application, ``serve/ray_app.py``) with ``replicas``.
    on: str = "local"
    replicas: int = 1
    #: Where the driver of a Ray Serve application connects (``ray.init``), resolved by the CLI.
    ray_address: str = ""
    labels: tuple[str, ...] = field(default_factory=tuple)


def check_name(name: str) -> str:
    if not SERVE_NAME.fullmatch(name):
        raise InvalidArgument(f"--name {name!r}: a served name is lower-case letters, digits and dashes, 1 to 63, "
                              "starting and ending with a letter or digit (it is a URL path segment)")
    return name


def default_name(run: Any) -> str:
    """The training run's name made a served name, else ``run-N``."""
    text = re.sub(r"[^a-z0-9-]+", "-", (run.name or "").lower()).strip("-")[:63].strip("-")
    return text if text and SERVE_NAME.fullmatch(text) else f"run-{run.number}"


def python_of(launch: dict[str, Any]) -> str:
    """The Python the training ran with, which has its packages: a --pip environment's ``python``
    (first on the run's PATH), else the interpreter its command named, else the submitter's."""
    if launch.get("pip") or launch.get("requirements"):
        return "python"
    argv = launch.get("argv") or []
    first = str(argv[0]) if argv and not launch.get("shell") else ""
    if Path(first).name.startswith("python"):
        return first
    return str(launch.get("python") or "python")


def command(request: ServeRequest, model: str, python: str = "python") -> list[str]:
    out = [python, "-m", SERVE_MODULE, "--handler", request.handler, "--model", model, "--name", request.name,
           "--host", request.host, "--port", str(request.port)]
    if request.log_inputs:
        out.append("--log-inputs")
    if request.on == "ray":
        out += ["--ray-replicas", str(request.replicas)]
        if request.ray_address:
            out += ["--ray-address", request.ray_address]
        if request.gpus:  # each replica's, from the cluster: the driver on this machine takes none
            out += ["--ray-gpus", str(request.gpus)]
    return out


def model_files(store: Any, run: Any, path: str) -> list[tuple[str, str]]:
    """(path, sha256) of the training run's artifacts that are the model (NotFound when none)."""
    path = path.strip("/")
    if path in (".", ""):
        path = ""
    files = [(a.path, a.sha256) for a in store.list_artifacts(run.number)
             if not path or a.path == path or a.path.startswith(path + "/")]
    if not files:
        known = sorted({a.path.split("/")[0] for a in store.list_artifacts(run.number)})
        raise NotFound(f"run {run.number} has no artifact at {path or '/'}"
                       + (f"; its artifacts start with: {', '.join(known[:10])}" if known else
                          " (it kept no artifacts: write the model under outputs/)"))
    return files


def submission(settings: Any, store: Any, parent: Any, path: str, request: ServeRequest, cwd: Path) -> Any:
    """The Submission of a serve run for ``parent``'s model at ``path``."""
    from runyard.exec.spec import Mount
    from runyard.exec.submit import Submission

    if parent.launch is None or parent.snapshot_id is None:
        raise InvalidArgument(f"run {parent.number} was not launched by `runyard run`, so runyard has no snapshot of "
                              "its code to find the handler in; train with `runyard run -- python train.py`, or "
                              "register its model files from a run that was")
    files = model_files(store, parent, path)
    path = path.strip("/").removeprefix(".").strip("/")
    single = len(files) == 1 and files[0][0] == path and path != ""
    # load() is always given a directory: a single file is placed in it under its own name.
    target = f"{MODEL_DIRECTORY}/{path.rsplit('/', 1)[-1]}" if single else MODEL_DIRECTORY
    mount = Mount("artifact", target, path, parent.number, files)
    argv = command(request, MODEL_DIRECTORY, python_of(parent.launch) if not request.pip else "python")
    launch = {**parent.launch, "argv": argv, "template": argv, "shell": False, "params": {},
              "timeout": None, "mounts": [asdict(mount)]}
    launch.pop("alerts", None)  # the training run's alerts are about training; a server's are its own
    resources = {k: v for k, v in parent.resources.items() if k not in ("assigned_gpus", "gpus")}
    resources["gpus"] = (request.gpus or 0) if request.on != "ray" else 0
    return Submission(command=argv, shell=False, cwd=cwd, project=parent.project, name=request.name,
                      labels=["serve", *request.labels], pip=request.pip, parent=parent.number, launch=launch,
                      resources=resources, executor="local", kind=RunKind.SERVE,
                      snapshot=(parent.snapshot_id, parent.git_commit, parent.git_branch, parent.git_diff_ref))


def newest_named(store: Any, name: str, active_only: bool = True) -> Any:
    """The newest serve run named ``name`` (with ``active_only``: queued, starting or running; what
    answers as that name), or None."""
    from runyard.store.api import RunQuery
    from runyard.types import RunStatus

    active = [RunStatus.QUEUED, RunStatus.STARTING, RunStatus.RUNNING] if active_only else []
    page = store.list_runs(RunQuery(kinds=[RunKind.SERVE], limit=1000, status=active))
    return next((run for run in page.items if run.name == name), None)


def serving_now(store: Any, name: str) -> Any:
    """The serve run answering as ``name`` (the newest that is not over), or None."""
    return newest_named(store, name)
