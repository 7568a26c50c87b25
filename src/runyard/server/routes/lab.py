"""A run's JupyterLab through the server: ``POST /runs/{ref}/lab`` gives a one-time link to it on the
lab origin (``server/lab.py``, ``runyard server --lab-port``)."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Request
from pydantic import BaseModel, Field

from runyard import wire
from runyard.errors import AccessDenied, Conflict, InvalidArgument, NotFound
from runyard.server.lab import Refused, ended_message, upstream_of
from runyard.server.lab_access import TICKET_TTL
from runyard.server.routes.execution import may_launch
from runyard.server.security import requires
from runyard.server.state import Server, principal_of


class Announcement(BaseModel):
    """Where a run's JupyterLab on a Ray node answers (what its node's supervisor says)."""

    host: Annotated[str, Field(max_length=64, description="the node's address, as this server sees it")]
    port: Annotated[int, Field(ge=1, le=65535)]
    token: Annotated[str, Field(min_length=32, max_length=256)]


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
        shown = wire.url_host(host)
        return {"url": f"{scheme}://{shown}:{server.lab_port}/lab/{run.id}/?ticket={ticket}",
                "expires_in": int(TICKET_TTL)}

    @app.post(f"{v1}/runs/{{ref}}/lab/address", tags=["execution"])
    @requires("writer")
    def announce_lab(request: Request, ref: str, body: Announcement) -> dict[str, Any]:
        """Where run ``ref``'s JupyterLab on a Ray node answers, said by that node's supervisor with the
        run's own token, every ``announce.EVERY`` seconds (kept in memory, never stored). The address
        must be the one the request is connected from (not what a proxy header says), and the first
        one said holds until it lapses: a token cannot point the lab origin anywhere else."""
        from runyard.exec.ray import TOKEN_PREFIX
        from runyard.notebook.announce import KEPT_FOR
        from runyard.server.connections import PEER

        run = server.run_for(request, ref)
        if principal_of(request).name != f"{TOKEN_PREFIX}{run.number}":
            raise AccessDenied(f"only the Ray job of run {run.number} says where its JupyterLab answers")
        if run.kind.value != "jupyterlab" or run.executor in (None, "local"):
            raise InvalidArgument(f"run {run.number} is not a JupyterLab run on a cluster")
        if run.status.is_terminal():
            raise Conflict(ended_message(run.number, run.status.value))
        connected = request.scope.get(PEER) or request.scope.get("client")
        peer = str(connected[0]) if connected else ""
        if _address(body.host) is None or _address(body.host) != _address(peer):
            raise InvalidArgument(f"a JupyterLab announced from {peer or 'an unknown address'} must answer there, "
                                  f"not at {body.host}")
        if not server.lab_access.announce(run.id, body.host, body.port, body.token, KEPT_FOR):
            raise Conflict(f"run {run.number}'s JupyterLab was said to answer elsewhere a moment ago; that holds "
                           f"until it lapses ({KEPT_FOR:g} s without news)")
        return {"kept_for": KEPT_FOR}


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An IP address as compared: an IPv4 peer of a dual-stack server is seen as ::ffff:a.b.c.d."""
    try:
        found = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(found, ipaddress.IPv6Address) and found.ipv4_mapped is not None:
        return found.ipv4_mapped
    return found
