"""``GET /events``: server-sent events of a run or a project; the streams and the Hub that wakes
them are in ``server/events.py``."""

from __future__ import annotations

from typing import Annotated

import anyio
from fastapi import FastAPI, Query, Request
from fastapi.responses import Response, StreamingResponse

from runyard import wire
from runyard.errors import NotFound
from runyard.server import events
from runyard.server.security import requires
from runyard.server.state import Server, error_response, principal_of


def add_routes(app: FastAPI, server: Server) -> None:
    store = server.store
    v1 = wire.API_PREFIX

    @app.get(f"{v1}/events", tags=["events"])
    @requires("reader")
    async def event_stream(request: Request, run: Annotated[str | None, Query(max_length=200)] = None,
                           project: Annotated[str | None, Query(max_length=100)] = None) -> Response:
        """Server-sent events: with ``run``, its metric points, log lines and status; with ``project``
        (or neither), runs that change state."""
        principal = principal_of(request)
        scope = principal.project
        hide = principal.role == "reader"
        if run is not None:
            found = await anyio.to_thread.run_sync(server.run_for, request, run)
            stream = events.run_stream(store, server.hub, found.number, request.is_disconnected, hide)
        else:
            if scope is not None and project not in (None, scope):
                raise NotFound(f"no project {project!r}")
            stream = events.project_stream(store, server.hub, project or scope, request.is_disconnected, hide)
        holder = f"token:{principal.token_id}" if principal.token_id is not None else principal.name
        refused = server.hub.admit(holder)
        if refused is not None:
            await stream.aclose()  # type: ignore[attr-defined]
            return error_response(503, refused)
        return StreamingResponse(events.counted(server.hub, holder, stream), media_type="text/event-stream",
                                 headers={"cache-control": "no-store", "x-accel-buffering": "no"})
