"""What the routes share: the ``Server`` (store, artifacts, hub...), who is asking, and the error answer."""

from __future__ import annotations

from typing import Any

import anyio
from fastapi import Request
from fastapi.responses import JSONResponse

from runyard.agent import alert_outbox, alert_sender
from runyard.config import Settings
from runyard.ingest.alerting import Outbox, Watcher
from runyard.server import events
from runyard.server.capacity import RETRY_AFTER_SECONDS, Capacity, Limits
from runyard.server.health_watch import HealthWatch
from runyard.server.lab_access import LabAccess
from runyard.server.security import Principal
from runyard.store.artifacts import ArtifactStore
from runyard.store.sql import SqlStore
from runyard.store.tokens import Tokens


class Server:
    """The app's shared parts: store, artifacts, hub. Handlers are closures over one of these
    (each module of ``routes/`` adds its own with ``add_routes(app, server)``)."""

    def __init__(self, settings: Settings, store: SqlStore, artifacts: ArtifactStore, limits: Limits,
                 lab_port: int = 0) -> None:
        self.settings = settings
        self.store = store
        self.artifacts = artifacts
        self.limits = limits
        #: Heavy requests: those decoding a body in memory, and uploads (see capacity.py).
        self.decoding = Capacity("requests decoding a body", limits.decode_slots, limits.slot_wait)
        self.uploads = Capacity("uploads", limits.upload_slots, limits.slot_wait)
        #: The health check's own threads (see ``routes.health.HEALTH``).
        self.health_lane = anyio.CapacityLimiter(limits.health_threads)
        self.tokens = Tokens(store)
        self.hub = events.Hub(store)
        self.watcher = Watcher(store, sender=alert_sender(settings))
        #: Started by `runyard server` (an app built in a test starts no threads).
        self.outbox: Outbox = alert_outbox(store, settings)
        #: The health check's view of the database; started by `runyard server` too.
        self.health_watch = HealthWatch(store.list_projects)
        #: The port of the lab origin (``runyard server --lab-port``; 0: none), and who may reach a
        #: run's JupyterLab through it (server/lab.py).
        self.lab_port = lab_port
        self.lab_access = LabAccess()

    def run_for(self, request: Request, ref: str) -> Any:
        """The run ``ref`` names among those the caller may see: a project token resolves it among
        its project's runs only, so another project's runs are neither found nor named in an error."""
        return self.store.get_run(ref, principal_of(request).project)


def principal_of(request: Request) -> Principal:
    """Who is asking: put in the request's state by the gate (security.py) before any route runs."""
    principal: Principal = request.state.principal
    return principal


def error_response(status: int, message: str, retry_after: float = RETRY_AFTER_SECONDS) -> JSONResponse:
    """An error answer; every 503 says when to try again (``Retry-After``, whole seconds)."""
    headers = {"x-content-type-options": "nosniff"}
    if status == 503:
        headers["retry-after"] = str(max(1, round(retry_after)))
    return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers)
