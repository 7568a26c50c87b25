"""``GET /api/health``: whether the server and its database answer."""

from __future__ import annotations

from typing import Any

import anyio
from fastapi import FastAPI, Request

from runyard._version import __version__
from runyard.server.security import DATABASE_ANSWERED, requires
from runyard.server.state import Server, error_response

#: The health check: answered on threads of its own (``Limits.health_threads``), its token too.
HEALTH = "/api/health"


def add_routes(app: FastAPI, server: Server) -> None:
    from runyard.spool.rundir import target_key
    from runyard.store.revision import REVISIONS

    store = server.store
    # "store" names the database and artifact store (a hash): `runyard ui` tells its own server
    # from another home's on the same port.
    healthy = {"status": "ok", "version": __version__, "schema": REVISIONS[-1], "dialect": store.dialect,
               "store": target_key(server.settings)}

    @app.get(HEALTH, tags=["server"])
    @requires("reader")
    async def health(request: Request) -> Any:
        """Whether the server and its database answer."""
        # The database answered for the caller's token a moment ago, on the health check's own
        # threads (security.py); asked again only when no token was needed. Each hop to a thread and
        # back is a wait for the GIL and the loop, which the busiest requests make long.
        if getattr(request.state, DATABASE_ANSWERED, False):
            return healthy
        watch = server.health_watch
        if watch.running:  # `runyard server`: the watch's thread asks the database every second
            problem = watch.problem()
            if problem is not None:
                return error_response(503, f"the database does not answer: {problem}")
            return healthy
        await anyio.to_thread.run_sync(store.list_projects, limiter=server.health_lane)
        return healthy
