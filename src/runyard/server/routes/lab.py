"""A run's JupyterLab through the server: ``POST /runs/{ref}/lab`` gives a one-time link to it on the
lab origin (``server/lab.py``, ``runyard server --lab-port``)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, HTTPException, Request

from runyard import wire
from runyard.errors import Conflict, NotFound
from runyard.server.lab import Refused, upstream_of
from runyard.server.lab_access import TICKET_TTL
from runyard.server.routes.execution import may_launch
from runyard.server.security import requires
from runyard.server.state import Server, principal_of


def add_routes(app: FastAPI, server: Server) -> None:
    v1 = wire.API_PREFIX

    @app.post(f"{v1}/runs/{{ref}}/lab", tags=["execution"])
    @requires("writer")
    def open_lab(request: Request, ref: str) -> dict[str, Any]:
        """A link that opens the run's JupyterLab once, in a browser, on the server's lab origin: ``url``
        (``http://HOST:LAB_PORT/lab/RUN_ID/?ticket=...``) and ``expires_in`` (seconds). A writer's: a
        JupyterLab runs code on the server's machine. 404 when the run is not a JupyterLab run answering
        on this server's machine, 409 once it has ended, 503 when the server serves no lab origin."""
        if not server.lab_port:
            raise HTTPException(503, "this server serves no JupyterLab (it was started with --lab-port 0): "
                                "start it with --lab-port PORT")
        may_launch(request, "opening a JupyterLab")
        run = server.run_for(request, ref)
        if run.kind.value != "jupyterlab":
            raise NotFound(f"run {run.number} is not a JupyterLab run (runyard notebook)")
        try:
            upstream_of(server, run.id)
        except Refused as e:
            if e.status == 410:
                raise Conflict(str(e)) from None
            raise NotFound(str(e)) from None
        principal = principal_of(request)
        ticket = server.lab_access.ticket(run.id, principal.token_id)
        scheme = "https" if request.url.scheme == "https" else "http"
        host = request.url.hostname or "127.0.0.1"
        shown = f"[{host}]" if ":" in host else host
        return {"url": f"{scheme}://{shown}:{server.lab_port}/lab/{run.id}/?ticket={ticket}",
                "expires_in": int(TICKET_TTL)}
