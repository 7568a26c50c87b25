"""``runyard notebook``: JupyterLab as a run, on this machine's agent, stopped when idle."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from runyard.config import resolve
from runyard.errors import InvalidArgument

#: What JupyterLab runs are labelled with, to tell them in `runyard ps`.
LABEL = "jupyterlab"


def notebook(o: dict[str, Any]) -> int:
    import importlib.util

    from runyard.exec import options
    from runyard.exec.environment import inherited
    from runyard.exec.submit import Submission, submit

    settings = resolve()
    if o["url"] is not None:
        return _print_url(settings, o["url"], o["as_json"])
    if settings.server or (o["on"] or settings.executor) != "local":
        # Its address is a port on the machine that runs it: reaching it through the server comes later.
        raise InvalidArgument("runyard notebook runs JupyterLab on this machine's agent only for now: unset "
                              "RUNYARD_SERVER and leave --on out (or --on local)")
    if importlib.util.find_spec("jupyterlab") is None:
        raise InvalidArgument(f"JupyterLab is not installed in {sys.executable}: pip install 'runyard[notebook]'")
    idle = options.duration(o["idle"]) if o["idle"] else 3600.0
    command = [sys.executable, "-m", "runyard.notebook.labrun", "--idle", f"{idle:g}"]
    sub = Submission(command=command, shell=False, cwd=Path.cwd(), project=o["project"], name=o["name"],
                     labels=[LABEL, *o["labels"]], pip=o["pip"], requirements=o["requirements"],
                     environment=inherited(os.environ), gpus=o["gpus"], cpus=o["cpus"],
                     memory=o["memory"], executor="local")
    from runyard.cli.transfer import transfer_bar

    with transfer_bar("storing the snapshot") as progress:
        done = submit(settings, sub, progress)
    for warning in done.warnings:
        print(f"runyard: warning: {warning}", file=sys.stderr)
    if not o["as_json"]:
        print(f"run {done.number} queued: JupyterLab on the files here, stopped after {idle / 60:g} min idle",
              file=sys.stderr)
    return _wait_and_print(settings, done.number, done.run_id, float(o["wait"]), o["as_json"])


def _wait_and_print(settings: Any, number: int, run_id: str, wait: float, as_json: bool) -> int:
    from runyard.api import Api
    from runyard.notebook.labrun import read_connection

    deadline = time.monotonic() + wait
    api = Api(settings)
    try:
        while time.monotonic() < deadline:
            found = read_connection(settings.home, run_id)
            if found is not None:
                return _say(number, found, as_json)
            status = api.run(number).status.value
            if status not in ("queued", "starting", "running"):
                print(f"runyard: error: the notebook run {number} ended ({status}) before JupyterLab answered; "
                      f"see runyard logs {number}", file=sys.stderr)
                return 1
            time.sleep(0.25)
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
    from runyard.notebook.labrun import read_connection

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
    url = f"{found['url']}?token={found['token']}"
    if as_json:
        print(json.dumps({"number": number, "url": url}))
    else:
        print(url)
    return 0
