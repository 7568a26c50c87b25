"""``runyard serve``: a trained run's model behind an HTTP endpoint with a demo page, as a run."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from runyard.errors import InvalidArgument


def serve(source: str, o: dict[str, Any]) -> int:
    from runyard.config import resolve
    from runyard.exec.serving import ServeRequest, check_name

    settings = resolve()
    handler = o["handler"] or _project_handler(settings)
    from runyard.serve.handler import parse_ref

    parse_ref(handler)
    ref, path = _source(settings, source)
    if o["export"] is not None:
        return _export(settings, ref, path, handler, o)
    if o["replicas"] != 1 and o["on"] != "ray":
        raise InvalidArgument("--replicas is for --on ray (a Ray Serve application) and --export k8s; on this "
                              "machine a model server is one process")
    ray_address = _check_ray(settings) if o["on"] == "ray" else ""
    if settings.server:
        return _on_server(settings, ref, path, handler, o)
    from runyard.api import Api
    from runyard.cli.transfer import transfer_bar
    from runyard.exec.serving import default_name, serving_now, submission
    from runyard.exec.submit import submit

    api = Api(settings)
    try:
        parent = api.store.get_run(ref)
        name = check_name(o["name"] or default_name(parent))
        already = serving_now(api.store, name)
        if already is not None:
            raise InvalidArgument(f"run {already.number} already serves {name!r} ({already.status.value}): stop it "
                                  f"first (runyard stop {already.number}), or choose another --name")
        request = ServeRequest(handler=handler, name=name, path=path, port=o["port"], host=o["host"],
                               pip=tuple(o["pip"]), gpus=o["gpus"], log_inputs=o["log_inputs"],
                               labels=tuple(o["labels"]), on=o["on"], replicas=o["replicas"],
                               ray_address=ray_address)
        sub = submission(settings, api.store, parent, path, request, Path.cwd())
    finally:
        api.close()
    from runyard.wire import is_loopback

    if not is_loopback(o["host"]):
        print(f"runyard: warning: --host {o['host']}: anyone who reaches this machine can use the model, without a "
              "token; teammates can reach it through a runyard server instead (RUNYARD_SERVER)", file=sys.stderr)
    with transfer_bar("queueing") as progress:
        done = submit(settings, sub, progress)
    if not o["as_json"]:
        print(f"run {done.number} queued: serving {name!r}, the model of run {parent.number}"
              f"{':' + path if path else ''} with {handler}", file=sys.stderr)
    return _wait_and_print(settings, done.number, done.run_id, name, float(o["wait"]), o["as_json"])


def _check_ray(settings: Any) -> str:
    """``--on ray``: Ray Serve installed here (this machine runs the application's driver) and a
    cluster the driver can reach, said before anything is queued; where the driver connects."""
    import importlib.util

    if settings.server:
        raise InvalidArgument("--on ray through a runyard server is not available yet: serve on Ray from the "
                              "machine whose home knows the cluster (unset RUNYARD_SERVER), or serve --on local")
    if importlib.util.find_spec("ray") is None:
        raise InvalidArgument("--on ray needs Ray Serve on this machine: pip install 'runyard[ray]'")
    from runyard.serve.ray_app import driver_address

    return driver_address(settings.ray)


def _project_handler(settings: Any) -> str:
    """``[serve] handler`` of the project's runyard.toml, when --handler is not given."""
    from runyard.serve.handler import serve_section

    project = getattr(settings, "project_file", None)
    section = serve_section(Path(project).parent) if project else {}
    handler = section.get("handler")
    if not isinstance(handler, str):
        raise InvalidArgument("which handler serves the model? give --handler FILE.py:Class (e.g. serve.py:Model), "
                              "or set handler = \"serve.py:Model\" under [serve] in runyard.toml")
    return handler


def _source(settings: Any, text: str) -> tuple[str, str]:
    """(run reference, artifact path) of ``RUN[:PATH]`` or of a registered ``model:NAME[@ALIAS]``."""
    if text.startswith("model:"):
        return _registered(settings, text)
    ref, _, path = text.partition(":")
    if not ref:
        raise InvalidArgument(f"{text!r}: expected RUN[:PATH], e.g. 12:outputs/model, or model:NAME[@ALIAS]")
    return ref, path.strip("/")


def _registered(settings: Any, text: str) -> tuple[str, str]:
    """A registered model's run and path; refused when its files are no longer what was registered."""
    from runyard.api import Api
    from runyard.errors import Conflict
    from runyard.models import resolve_model, verify_digest

    api = Api(settings)
    try:
        version = resolve_model(api, text)
        if not verify_digest(version, api.store.list_artifacts(version.run_number)):
            raise Conflict(f"{text}: the files of run {version.run_number} under {version.path or '/'} are no "
                           f"longer those registered as {version.name} version {version.version}")
    finally:
        api.close()
    return str(version.run_number), version.path


def _export(settings: Any, ref: str, path: str, handler: str, o: dict[str, Any]) -> int:
    """``--export k8s DIR``: a Docker build context and Kubernetes manifests, nothing served."""
    kind, dest = o["export"]
    if kind != "k8s":
        raise InvalidArgument(f"--export {kind}: the one export is k8s (--export k8s DIR)")
    from runyard.api import Api
    from runyard.cli.transfer import transfer_bar
    from runyard.serve.export import export_k8s

    api = Api(settings)
    try:
        run = api.store.get_run(ref)
        with transfer_bar("exporting") as progress:
            written = export_k8s(api, run, path, handler, o["name"], Path(dest), port=o["port"] or 8080,
                                 replicas=o["replicas"], force=o["force"], progress=progress)
    finally:
        api.close()
    if o["as_json"]:
        print(json.dumps({"number": run.number, "directory": str(dest), "written": [str(p) for p in written]}))
    else:
        print(f"wrote {dest}: Dockerfile, k8s.yaml and their build context for run {run.number}'s model; "
              f"see {Path(dest) / 'README.md'}", file=sys.stderr)
    return 0


def _on_server(settings: Any, ref: str, path: str, handler: str, o: dict[str, Any]) -> int:
    """Through a server: the serve run queued there; its address is the server's ``/serve/NAME/``."""
    from runyard.client import Client
    from runyard.credential import for_settings

    client = Client(settings.server or "", for_settings(settings), retries=0)
    try:
        body = {"path": path, "handler": handler, "name": o["name"], "port": o["port"], "pip": list(o["pip"]),
                "gpus": o["gpus"], "log_inputs": o["log_inputs"], "labels": list(o["labels"])}
        queued = client.request("POST", f"/runs/{ref}/serve", json=body).json()
        number, name = int(queued["number"]), str(queued["name"])
        if not o["as_json"]:
            print(f"run {number} queued on {settings.server}: serving {name!r}", file=sys.stderr)
        deadline = time.monotonic() + float(o["wait"])
        while time.monotonic() < deadline:
            state = client.get(f"/serve/{name}")
            if state.get("ready"):
                return _say_served(client, number, name, state, o["as_json"])
            if state.get("status") not in ("queued", "starting", "running"):
                print(f"runyard: error: the serve run {number} ended ({state.get('status')}) before its model "
                      f"was ready; see runyard logs {number}", file=sys.stderr)
                return 1
            time.sleep(0.5)
    finally:
        client.close()
    print(f"runyard: the model server of run {number} is not ready yet; `runyard ps` shows it, and "
          f"`runyard logs {number}` what it is doing", file=sys.stderr)
    return 0


def _wait_and_print(settings: Any, number: int, run_id: str, name: str, wait: float, as_json: bool) -> int:
    from runyard.api import Api
    from runyard.serve.connection import read_serve_file

    deadline = time.monotonic() + wait
    api = Api(settings)
    try:
        while time.monotonic() < deadline:
            found = read_serve_file(settings.home, run_id)
            if found is not None:
                return _say(number, name, str(found["url"]), as_json)
            view = api.run(number)
            status = view.status.value
            if status not in ("queued", "starting", "running"):
                last = [line.text for line in view.logs()][-6:]
                print(f"runyard: error: the serve run {number} ended ({status}) before its model was ready; "
                      f"the end of its log (runyard logs {number}):", file=sys.stderr)
                from runyard.cli.printable import printable

                for line in last:
                    print(f"  {printable(line)}", file=sys.stderr)
                return 1
            time.sleep(0.25)
    finally:
        api.close()
    print(f"runyard: the model server of run {number} is not ready yet (queued, or its model still loading); "
          f"`runyard serve --url {number}` prints its address once it is", file=sys.stderr)
    if as_json:
        print(json.dumps({"number": number, "id": run_id, "name": name, "url": None}))
    return 0


def print_url(ref: str, as_json: bool) -> int:
    """``runyard serve --url RUN``: where serve run RUN answers."""
    from runyard.api import Api
    from runyard.config import resolve
    from runyard.errors import NotFound
    from runyard.serve.connection import read_serve_file

    settings = resolve()
    if settings.server:
        from runyard.client import Client
        from runyard.credential import for_settings

        client = Client(settings.server or "", for_settings(settings), retries=0)
        try:
            run = client.get(f"/runs/{ref}")
            if run.get("kind") != "serve":
                raise NotFound(f"run {run['number']} is not a serve run (runyard serve)")
            state = client.get(f"/serve/{run['name']}")
            if not state.get("ready"):
                raise NotFound(f"run {run['number']}'s model server is not ready ({state.get('status')})")
            return _say_served(client, int(run["number"]), str(run["name"]), state, as_json)
        finally:
            client.close()
    api = Api(settings)
    try:
        run = api.store.get_run(ref)
    finally:
        api.close()
    found = read_serve_file(settings.home, run.id)
    if run.kind.value != "serve" or found is None or run.status.value not in ("starting", "running"):
        raise NotFound(f"run {run.number} has no model server answering on this machine ({run.status.value})")
    return _say(run.number, run.name or "", str(found["url"]), as_json)


def _say_served(client: Any, number: int, name: str, state: dict[str, Any], as_json: bool) -> int:
    """A model served through a server: its address on the lab origin, for scripts with a token, and
    a one-time link for a browser (on stderr: it is a secret, and works once)."""
    if state.get("url") is None:
        print("runyard: error: the server serves no lab origin (--lab-port 0), where models are reached; ask its "
              "admin to start it with --lab-port PORT", file=sys.stderr)
        return 1
    link = client.request("POST", f"/serve/{name}/link").json()["url"]
    if as_json:
        print(json.dumps({"number": number, "name": name, "url": state["url"], "link": link}))
    else:
        print(state["url"])
        print(f"open in a browser (works once, for 2 minutes): {link}", file=sys.stderr)
    return 0


def _say(number: int, name: str, url: str, as_json: bool) -> int:
    if as_json:
        print(json.dumps({"number": number, "name": name, "url": url}))
    else:
        print(url)
    return 0
