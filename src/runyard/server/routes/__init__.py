"""The API's routes, one module per noun, each adding its own with ``add_routes(app, server)``.

Handlers are closures over the app's ``Server`` (as ``login.add_routes`` over its ``Policy``), and
each declares its role with ``security.requires``. They are added to the app itself, not through
``APIRouter``/``include_router``: since FastAPI 0.137 an included router is one opaque node in
``app.router.routes``, and the gate reads each matched route's role from that list.

The order of the modules is the order the gate and the router try the routes in; it matters where
two routes share a path (``GET /runs`` of ``runs`` is tried before ``POST /runs`` of ``execution``).
"""

from __future__ import annotations

from fastapi import FastAPI

from runyard.server.routes import (
    alerts,
    artifacts,
    events,
    execution,
    health,
    ingest,
    lab,
    metrics,
    models,
    notebooks,
    runs,
    serving,
    tokens,
)
from runyard.server.state import Server

#: Each noun's routes, in the order they are added.
MODULES = (health, runs, execution, lab, serving, metrics, alerts, artifacts, notebooks, models, ingest,
           events, tokens)


def add_routes(app: FastAPI, server: Server) -> None:
    for module in MODULES:
        module.add_routes(app, server)
