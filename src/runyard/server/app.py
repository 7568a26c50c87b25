"""The server's ASGI app: ``create_app(settings, store, artifacts, ...)``; no module-level state.

Handlers are thin: parse, check the caller may see the run, call the store, answer in the forms of
``runyard.wire``; they are in ``routes/``, one module per noun. Errors are JSON
``{"error": message, "status": code}`` from one table below, and never repeat request headers back.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Route

from runyard._version import __version__
from runyard.config import Settings
from runyard.errors import (
    AccessDenied,
    Ambiguous,
    ArtifactError,
    ArtifactPathError,
    Busy,
    Conflict,
    InvalidArgument,
    NotFound,
    RunyardError,
    StoreUnavailable,
    TooLarge,
    Unstorable,
)
from runyard.server import login, routes, ui
from runyard.server.capacity import RETRY_AFTER_SECONDS, Limits
from runyard.server.headers import SecurityHeaders
from runyard.server.ratelimit import RateLimit
from runyard.server.routes.health import HEALTH
from runyard.server.security import BodyTooLarge, Gate, Policy
from runyard.server.state import Server, error_response
from runyard.store.artifacts import ArtifactStore
from runyard.store.sql import SqlStore

#: HTTP status of each error a handler can raise (the first matching class wins).
STATUS: tuple[tuple[type[BaseException], int], ...] = (
    (AccessDenied, 403),
    (NotFound, 404),
    (Ambiguous, 409),
    (Conflict, 409),
    (ArtifactPathError, 400),
    (Unstorable, 422),
    (TooLarge, 413),
    (InvalidArgument, 400),
    (StoreUnavailable, 503),
    (Busy, 503),
    (ArtifactError, 500),
    (RunyardError, 400),
)


def create_app(settings: Settings, store: SqlStore, artifacts: ArtifactStore, bind_host: str = "127.0.0.1",
               port: int = 8765, allowed_hosts: tuple[str, ...] = (), limits: Limits | None = None,
               insecure_local: bool = False, lab_port: int = 0) -> FastAPI:
    """The app. Every request needs a token, but with ``insecure_local`` on loopback while none exists.
    ``lab_port``: where the lab origin (``server.lab.lab_app``, served beside it) listens; 0: none."""
    server = Server(settings, store, artifacts, limits or Limits(), lab_port)
    app = FastAPI(title="runyard", version=__version__, openapi_url="/api/openapi.json", docs_url=None,
                  redoc_url=None,
                  description="The runyard tracking server: runs, metrics, logs, artifacts, live events.")
    app.state.server = server
    policy = Policy(bind_host, port, server.tokens, tuple(h.lower() for h in allowed_hosts),
                    insecure_local=insecure_local)
    app.state.policy = policy
    _errors(app)
    routes.add_routes(app, server)
    login.add_routes(app, policy)
    ui.mount(app)
    # The gate wraps the whole app (so error pages too); it matches routes itself to read their roles.
    app.add_middleware(Gate, policy=policy, routes=lambda: app.router.routes, decoding=server.decoding,
                       lanes={HEALTH: server.health_lane}, rates=RateLimit(server.limits.rate, server.limits.burst),
                       remembered={HEALTH: server.health_watch})
    app.add_middleware(SecurityHeaders)
    _declare_builtin_roles(app)
    return app


def _declare_builtin_roles(app: FastAPI) -> None:
    for route in app.router.routes:
        if isinstance(route, Route) and route.path == "/api/openapi.json":
            route.runyard_role = "reader"  # type: ignore[attr-defined]


def _errors(app: FastAPI) -> None:
    @app.exception_handler(RunyardError)
    async def runyard_error(request: Request, exc: RunyardError) -> JSONResponse:
        status = next(code for cls, code in STATUS if isinstance(exc, cls))
        return error_response(status, str(exc), getattr(exc, "retry_after", RETRY_AFTER_SECONDS))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors()[:5]:
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "request"
            problems.append(f"{where}: {err.get('msg', 'invalid')}")
        return error_response(400, "; ".join(problems) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        messages = {404: "no such endpoint (the API is under /api/v1; see /api/openapi.json)",
                    405: "this endpoint does not accept that method"}
        return error_response(exc.status_code, messages.get(exc.status_code, str(exc.detail)))

    @app.exception_handler(ClientDisconnect)
    async def gone(request: Request, exc: ClientDisconnect) -> Response:
        # The client went, or was cut off sending its body too slowly (connections.py): nobody to
        # answer, and nothing the server's log needs a traceback for.
        return Response(status_code=400)

    @app.exception_handler(BodyTooLarge)
    async def too_large(request: Request, exc: BodyTooLarge) -> JSONResponse:
        return error_response(413, str(exc))

    @app.exception_handler(Exception)
    async def crash(request: Request, exc: Exception) -> JSONResponse:
        import sqlalchemy.exc

        if isinstance(exc, sqlalchemy.exc.OperationalError | sqlalchemy.exc.TimeoutError):
            # Locked, out of connections, or restarting: the client retries what is safe to repeat.
            return error_response(503, "the database is busy or unreachable; try again")
        if isinstance(exc, sqlalchemy.exc.IntegrityError):
            return error_response(409, "a concurrent change conflicted with this one; try again")
        import traceback

        traceback.print_exception(exc)
        return error_response(500, "internal error; the server's log has the details")
