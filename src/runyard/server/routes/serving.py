"""Model servers through the server: ``POST /runs/{ref}/serve`` starts one for a run's model on the
server's machine, ``GET /serve/{name}`` says where it answers (``/serve/NAME/`` on the lab origin,
``server/served.py``), ``POST /serve/{name}/link`` gives a browser a one-time link to its demo page."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Request
from pydantic import BaseModel, Field

from runyard import wire
from runyard.errors import InvalidArgument, NotFound
from runyard.server.routes.execution import may_launch
from runyard.server.security import requires
from runyard.server.state import Server, principal_of


class ServeBody(BaseModel):
    """A model server for a run's model, as `runyard serve` sends it."""

    handler: Annotated[str, Field(max_length=300, description="FILE.py:Class in the run's code")]
    path: Annotated[str, Field("", max_length=1000, description="the run's artifacts that are the model")]
    name: Annotated[str | None, Field(None, max_length=63, description="served as /serve/NAME/")]
    port: Annotated[int, Field(0, ge=0, le=65535)]
    pip: Annotated[list[str], Field(default_factory=list, max_length=100)]
    gpus: Annotated[int | None, Field(None, ge=0, le=4096)]
    log_inputs: bool = False
    labels: Annotated[list[str], Field(default_factory=list, max_length=100)]


def add_routes(app: FastAPI, server: Server) -> None:
    store = server.store
    v1 = wire.API_PREFIX

    @app.post(f"{v1}/runs/{{ref}}/serve", tags=["serving"])
    @requires("writer")
    def start(request: Request, ref: str, body: ServeBody) -> dict[str, Any]:
        """Serve run ``ref``'s model on the server's machine, as a new run of kind serve (loopback;
        reached through ``/serve/NAME/`` on the lab origin). 409 when NAME is served already."""
        from runyard.errors import Conflict
        from runyard.exec.serving import ServeRequest, check_name, default_name, serving_now, submission
        from runyard.exec.submit import submit
        from runyard.serve.handler import parse_ref

        may_launch(request, "serving a model")
        parent = server.run_for(request, ref)
        parse_ref(body.handler)
        name = check_name(body.name or default_name(parent))
        already = serving_now(store, name)
        if already is not None:
            raise Conflict(f"run {already.number} already serves {name!r} ({already.status.value}): stop it first, "
                           "or choose another --name")
        serve = ServeRequest(handler=body.handler, name=name, path=body.path, port=body.port, pip=tuple(body.pip),
                             gpus=body.gpus, log_inputs=body.log_inputs, labels=tuple(body.labels))
        done = submit(server.settings, submission(server.settings, store, parent, body.path, serve, Path()))
        run = store.get_run(done.number)
        server.hub.publish(run.number, run.project)
        return {"number": done.number, "id": done.run_id, "name": name, "status": run.status.value}

    @app.get(f"{v1}/serve/{{name}}", tags=["serving"])
    @requires("reader")
    def where(request: Request, name: str) -> dict[str, Any]:
        """The newest serve run of that name: its status, whether its model is loaded (``ready``), and
        its address on the lab origin (``url``; null when the server serves no lab origin)."""
        run = _newest(server, name)
        server.run_for(request, str(run.number))  # a token limited to a project sees its runs only
        from runyard.serve.connection import read_serve_file

        ready = run.status.value == "running" and read_serve_file(server.settings.home, run.id) is not None
        return {"name": name, "number": run.number, "id": run.id, "status": run.status.value, "ready": ready,
                "url": _url(request, server, name)}

    @app.post(f"{v1}/serve/{{name}}/link", tags=["serving"])
    @requires("reader")
    def link(request: Request, name: str) -> dict[str, Any]:
        """A link that opens the demo page of the model served as NAME once, in a browser (a session
        on the lab origin, scoped to ``/serve/NAME/``), within ``expires_in`` seconds."""
        from runyard.server.lab_access import TICKET_TTL

        url = _url(request, server, name)
        if url is None:
            raise HTTPException(503, "this server serves no lab origin (it was started with --lab-port 0), where "
                                "models are served: start it with --lab-port PORT")
        run = _newest(server, name)
        server.run_for(request, str(run.number))
        if run.status.value != "running":
            raise NotFound(f"run {run.number} serving {name!r} is {run.status.value}")
        ticket = server.lab_access.ticket(run.id, principal_of(request).token_id)
        return {"url": f"{url}?ticket={ticket}", "expires_in": int(TICKET_TTL)}


def _newest(server: Server, name: str) -> Any:
    from runyard.exec.serving import SERVE_NAME, newest_named

    if not SERVE_NAME.fullmatch(name):
        raise InvalidArgument(f"{name!r} is not a served name (lower-case letters, digits and dashes)")
    found = newest_named(server.store, name, active_only=False)
    if found is None:
        raise NotFound(f"nothing was served as {name!r}")
    return found


def _url(request: Request, server: Server, name: str) -> str | None:
    if not server.lab_port:
        return None
    scheme = "https" if request.url.scheme == "https" else "http"
    return f"{scheme}://{wire.url_host(request.url.hostname or '127.0.0.1')}:{server.lab_port}/serve/{name}/"
