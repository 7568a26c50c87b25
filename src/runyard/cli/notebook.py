"""``runyard notebook``: JupyterLab as a run, on this machine's agent (or, through a server, on the
server's machine, reached through its lab origin: server/lab.py), stopped when idle."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from runyard.config import resolve
from runyard.errors import InvalidArgument
from runyard.notebook.lab import LABEL


def notebook(o: dict[str, Any]) -> int:
    import importlib.util

    from runyard.exec import options
    from runyard.exec.environment import inherited
    from runyard.exec.submit import LAB_COMMAND, Submission, submit
    from runyard.types import RunKind

    settings = resolve()
    # Through a server, the server's executor setting is not this machine's: only --on counts.
    if not settings.server and (o["on"] or settings.executor) != "local":
        # Reached through the server its node reports to (its lab origin): there is none here.
        raise InvalidArgument("runyard notebook --on ray goes through the runyard server your cluster's nodes "
                              "report to: set RUNYARD_SERVER (and RUNYARD_TOKEN); without it, leave --on out "
                              "(or --on local) for JupyterLab on this machine")
    if o["url"] is not None:
        if settings.server:
            return _say(*_ticket(settings, o["url"]), o["as_json"])
        return _print_url(settings, o["url"], o["as_json"])
    if settings.server and o["resume"] is None:
        return _on_server(settings, o)
    if not settings.server and importlib.util.find_spec("jupyterlab") is None:
        raise InvalidArgument(f"JupyterLab is not installed in {sys.executable}: pip install 'runyard[notebook]'")
    idle = options.duration(o["idle"]) if o["idle"] else 3600.0
    if o["resume"] is not None:
        return _resume(settings, o, idle)
    # The idle time is a param (RUNYARD_PARAM_idle), not part of the command: a resumed run changes it.
    command = [sys.executable, *LAB_COMMAND]
    sub = Submission(command=command, shell=False, cwd=Path.cwd(), project=o["project"], name=o["name"],
                     labels=[LABEL, *o["labels"]], params={"idle": f"{idle:g}"}, pip=o["pip"],
                     environment_profile=o["environment_profile"], requirements=o["requirements"],
                     environment=inherited(os.environ), gpus=o["gpus"], cpus=o["cpus"], memory=o["memory"],
                     executor="local", kind=RunKind.JUPYTERLAB)
    from runyard.cli.transfer import transfer_bar

    with transfer_bar("storing the snapshot") as progress:
        done = submit(settings, sub, progress)
    for warning in done.warnings:
        print(f"runyard: warning: {warning}", file=sys.stderr)
    if not o["as_json"]:
        print(f"run {done.number} queued: JupyterLab on the files here, stopped after {idle / 60:g} min idle",
              file=sys.stderr)
    return _wait_and_print(settings, done.number, done.run_id, float(o["wait"]), o["as_json"])


def _on_server(settings: Any, o: dict[str, Any]) -> int:
    """Through a server: the run queued there (on its machine's agent, or a Ray node with --on ray),
    then a link to it through the server's lab origin once JupyterLab answers."""
    from runyard.cli.runs import queue_on_server
    from runyard.exec import options
    from runyard.exec.submit import LAB_COMMAND
    from runyard.types import RunKind

    idle = options.duration(o["idle"]) if o["idle"] else 3600.0
    # The server runs it with its own Python (the one runyard runs in there), whatever this names.
    launch = {**o, "labels": [LABEL, *o["labels"]], "mounts": (), "note": "", "params": [f"idle={idle:g}"],
              "env": (), "timeout": None, "priority": None, "machine": None, "on": o["on"] or "local"}
    queued, _, _ = queue_on_server(settings, ["python", *LAB_COMMAND], False, launch, RunKind.JUPYTERLAB)
    number, run_id = int(queued["number"]), str(queued["id"])
    if not o["as_json"]:
        print(f"run {number} queued on {settings.server}: JupyterLab on the files here, stopped after "
              f"{idle / 60:g} min idle", file=sys.stderr)
    return _wait_and_print(settings, number, run_id, float(o["wait"]), o["as_json"])


def _ticket(settings: Any, ref: str | int) -> tuple[int, dict[str, Any]]:
    """A one-time link to the run's JupyterLab through the server (``POST /runs/{ref}/lab``)."""
    from runyard.client import Client
    from runyard.credential import for_settings

    client = Client(settings.server or "", for_settings(settings), retries=0)
    try:
        number = int(client.get(f"/runs/{ref}")["number"])
        return number, client.request("POST", f"/runs/{number}/lab").json()
    finally:
        client.close()


def _resume(settings: Any, o: dict[str, Any], idle: float) -> int:
    """A new notebook run on the files of notebook run ``--resume`` as it left them (its snapshot and
    outputs), with the resources given now: a rerun of it, which restores its outputs as it starts."""
    from runyard.api import Api
    from runyard.exec.control import Overrides

    if (o["requirements"] is not None or o["cpus"] is not None or o["memory"] is not None
            or o["environment_profile"] is not None):
        raise InvalidArgument("--resume takes --gpus, --pip, --idle and --name; --cpus, --memory, "
                              "--environment and --requirements are the resumed run's")
    api = Api(settings)
    try:
        parent = api.store.get_run(o["resume"])
        if parent.kind.value != "jupyterlab":
            raise InvalidArgument(f"run {parent.number} is not a notebook run (runyard notebook); "
                                  f"to run it again: runyard rerun {parent.number}")
        if parent.status.value in ("queued", "starting", "running"):
            raise InvalidArgument(f"notebook run {parent.number} is {parent.status.value}: stop it first "
                                  f"(runyard stop {parent.number}), so that its files are all kept")
        number = api.rerun(parent, {"idle": f"{idle:g}"}, o["name"], Overrides(pip=list(o["pip"]), gpus=o["gpus"]))
        run_id = api.store.get_run(number).id
    finally:
        api.close()
    if not o["as_json"]:
        print(f"run {number} queued: JupyterLab on the files of run {parent.number}", file=sys.stderr)
    return _wait_and_print(settings, number, run_id, float(o["wait"]), o["as_json"])


def _wait_and_print(settings: Any, number: int, run_id: str, wait: float, as_json: bool) -> int:
    from runyard.api import Api
    from runyard.errors import Conflict, NotFound
    from runyard.notebook.connection import read_connection

    deadline = time.monotonic() + wait
    api = Api(settings)
    try:
        while time.monotonic() < deadline:
            if settings.server:
                try:
                    return _say(*_ticket(settings, number), as_json)
                except (NotFound, Conflict):
                    pass  # not answering yet, or no more: its status says which
            else:
                found = read_connection(settings.home, run_id)
                if found is not None:
                    return _say(number, found, as_json)
            status = api.run(number).status.value
            if status not in ("queued", "starting", "running"):
                print(f"runyard: error: the notebook run {number} ended ({status}) before JupyterLab answered; "
                      f"see runyard logs {number}", file=sys.stderr)
                return 1
            time.sleep(0.5 if settings.server else 0.25)  # a server is asked over the network
    finally:
        api.close()
    print(f"runyard: JupyterLab of run {number} is not up yet (queued for resources, or still starting); "
          f"`runyard notebook --url {number}` prints its address once it is", file=sys.stderr)
    if as_json:
        print(json.dumps({"number": number, "id": run_id, "url": None}))
    return 0


def _print_url(settings: Any, ref: str, as_json: bool) -> int:
    from runyard.api import Api
    from runyard.errors import NotFound
    from runyard.notebook.connection import read_connection

    api = Api(settings)
    try:
        run = api.run(ref)
    finally:
        api.close()
    found = read_connection(settings.home, run.id)
    if found is None or run.status.value not in ("starting", "running"):
        raise NotFound(f"run {run.number} has no JupyterLab answering on this machine ({run.status.value})")
    return _say(run.number, found, as_json)


def _say(number: int, found: dict[str, Any], as_json: bool) -> int:
    """Print the address: a local JupyterLab's with its token, or a server's one-time link (``ticket``)."""
    url = found["url"] if "token" not in found else f"{found['url']}?token={found['token']}"
    if as_json:
        print(json.dumps({"number": number, "url": url}))
    else:
        print(url)
    return 0
