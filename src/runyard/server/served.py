"""Model servers through the runyard server: ``/serve/NAME/`` on the lab origin (``server/lab.py``).

A model server (``runyard serve``) listens on loopback on the server's machine; teammates reach it
here with their tokens. The lab origin, not the dashboard's, serves it: a model server is the run's
own code, and its pages must not run where the dashboard's session lives (the peers' demo servers
are a known attack surface: research/serving.md §3.5).

Who may call: a request with ``Authorization: Bearer <token>`` (any active token of reader rank or
more; a token limited to a project, for runs of that project only) — what scripts and ``curl``
send; or a browser with the lab session cookie of a ticket of ``POST /api/v1/serve/NAME/link``,
scoped to ``/serve/NAME/``. ``/serve/NAME/X`` is passed on to the model server as ``/X``; its demo
page's links are relative, so they stay under ``/serve/NAME/``.
"""

from __future__ import annotations

import hashlib
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import anyio
from starlette.datastructures import Headers

from runyard.server.lab import CHECK_EVERY, LAB_COOKIE, Refused, Upstream, _redirect
from runyard.server.lab_access import TICKET_TTL
from runyard.server.security import RANK, SeveralCookies, cookie

if TYPE_CHECKING:
    from starlette.types import Receive, Scope, Send

    from runyard.server.lab import LabProxy
    from runyard.server.state import Server

def serving(server: Server, name: str) -> tuple[Any, Upstream]:
    """The serve run answering as ``name`` and where (Refused 404 when none is, 503 while loading)."""
    from runyard.exec.serving import serving_now
    from runyard.serve.connection import read_serve_file

    run = serving_now(server.store, name)
    if run is None:
        raise Refused(404, f"nothing is served as {name!r}: `runyard serve RUN --name {name}` serves a model "
                      "under that name")
    found = read_serve_file(server.settings.home, run.id)
    import socket

    if found is None and run.host and run.host != socket.gethostname():
        raise Refused(503, f"run {run.number} serves {name!r} on {run.host}: reach it through the runyard server "
                      "of that machine")
    if found is None or run.status.value != "running":
        raise Refused(503, f"run {run.number} serving {name!r} is {run.status.value}, its model not loaded yet: "
                      "try again in a moment")
    from urllib.parse import urlsplit

    host = str(found.get("host") or "127.0.0.1")
    every = host in ("0.0.0.0", "::")  # noqa: S104 - a server listening everywhere answers on loopback too
    # Its URL's path: "/" for a model server of its own, "/NAME/" for a Ray Serve application's route.
    prefix = urlsplit(str(found.get("url") or "")).path.rstrip("/")
    return run, Upstream(int(found["port"]), "", "127.0.0.1" if every else host, prefix)


def upstream_of_run(server: Server, run_id: str) -> Upstream:
    """Where serve run ``run_id`` answers, while it is the one serving its name (a lab session's check)."""
    from runyard.errors import NotFound

    try:
        run = server.store.get_run(run_id)
    except NotFound:
        raise Refused(404, "no such run") from None
    if run.status.is_terminal():
        raise Refused(410, f"run {run.number} has ended ({run.status.value}): its model server is gone")
    found, upstream = serving(server, run.name or "")
    if found.id != run_id:
        raise Refused(410, f"run {run.number} no longer serves {run.name!r}: open it again")
    return upstream


class ServedProxy:
    """The ``/serve/NAME/`` half of the lab origin: checks the caller, then hands the request to
    the lab origin's HTTP proxy with the model server's address."""

    def __init__(self, proxy: LabProxy) -> None:
        self.proxy = proxy
        #: sha256 of a bearer secret -> (checked at, role, project): a script sends thousands.
        self._bearers: dict[str, tuple[float, str, str | None]] = {}
        #: name -> (checked at, run, upstream): which run serves a name, and where.
        self._names: dict[str, tuple[float, Any, Upstream]] = {}

    async def handle(self, scope: Scope, receive: Receive, send: Send, name: str, rest: str) -> None:
        if scope["type"] != "http":
            raise Refused(404, "a model server takes no websocket")
        if rest == "":
            query = scope.get("query_string", b"").decode("latin-1")
            await _redirect(send, f"/serve/{name}/" + (f"?{query}" if query else ""))
            return
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if rest == "/" and "ticket" in query:
            await self._redeem(scope, send, name, query["ticket"][0])
            return
        who = await self._caller(scope)  # before the name is looked up: strangers learn nothing of it
        # The path goes on as it came (raw): it must be this name's, with no segment that leads out
        # of it. /serve/a/../b/ would reach model b (a Ray Serve proxy serves every application) on
        # a check made for a; /serve/a%62/ is name ab once decoded but not as passed on.
        raw = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        if any(part in (".", "..") for part in rest.split("/")) or not raw.startswith(f"/serve/{name}/"):
            raise Refused(400, f"a model's path is /serve/{name}/..., written as is: no . or .. segment, no "
                          "escaped letter in its name")
        run, upstream = await self._serving(name)
        await self._permit(who, run)
        path = raw[len(f"/serve/{name}"):]
        raw_query = scope.get("query_string", b"").decode("latin-1")
        from runyard.wire import url_host

        target = (f"http://{url_host(upstream.host)}:{upstream.port}{upstream.prefix}{path}"
                  + (f"?{raw_query}" if raw_query else ""))
        try:
            await self.proxy._http(scope, receive, send, upstream, target)
        except Refused as e:
            if e.status != 502:
                raise
            # Not answering: stopped a moment ago (what was trusted for CHECK_EVERY is stale), or
            # restarting. Asked again, the answer says which: gone (404), loading (503), or 502.
            self._names.pop(name, None)
            await self._serving(name)
            raise

    async def _serving(self, name: str) -> tuple[Any, Upstream]:
        """``serving(name)``, trusted for CHECK_EVERY seconds: a script sends thousands of requests,
        and each would otherwise ask the database and read the run's serve.json."""
        now = time.monotonic()
        known = self._names.get(name)
        if known is not None and now - known[0] < CHECK_EVERY:
            return known[1], known[2]
        try:
            run, upstream = await anyio.to_thread.run_sync(serving, self.proxy.server, name)
        except Refused:
            self._names.pop(name, None)
            raise
        if len(self._names) > 10_000:
            self._names.clear()
        self._names[name] = (now, run, upstream)
        return run, upstream

    async def _redeem(self, scope: Scope, send: Send, name: str, ticket: str) -> None:
        if not self.proxy.access.known(ticket, ticket=True):  # before the name is looked up
            raise Refused(401, "this link is used up or has expired: open the model from the runyard dashboard "
                          "again, or get a new link with `runyard serve --url RUN`")
        run, _ = await anyio.to_thread.run_sync(serving, self.proxy.server, name)
        redeemed = self.proxy.access.redeem(ticket, run.id)
        if redeemed is None:
            raise Refused(401, "this link is used up or has expired: open the model from the runyard dashboard "
                          "again, or get a new link with `runyard serve --url RUN`")
        session, _ = redeemed
        session_cookie = (f"{LAB_COOKIE}={session}; Path=/serve/{name}/; HttpOnly; SameSite=Lax"
                          + ("; Secure" if scope.get("scheme") == "https" else ""))
        await _redirect(send, f"/serve/{name}/", [(b"set-cookie", session_cookie.encode())])

    async def _caller(self, scope: Scope) -> tuple[str, Any, Any]:
        """("bearer", role, project), ("session", secret, None) or ("open", None, None): Refused
        (401) for a request with neither where tokens are needed."""
        headers = Headers(scope=scope)
        scheme, _, secret = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and secret.strip():
            role, project = await self._bearer(secret.strip())
            return "bearer", role, project
        try:
            session = cookie(headers, LAB_COOKIE)
        except SeveralCookies as e:
            raise Refused(400, str(e)) from None
        if session is not None and self.proxy.access.known(session):
            return "session", session, None
        if not await anyio.to_thread.run_sync(self.proxy.policy.auth_required):
            return "open", None, None  # --insecure-local while no token exists: as the API
        raise Refused(401, "this model needs a token: send `Authorization: Bearer <token>`, or open it from the "
                      f"runyard dashboard (a link works once, within {TICKET_TTL / 60:g} minutes)")

    async def _permit(self, who: tuple[str, Any, Any], run: Any) -> None:
        """Refused unless the caller may use the model ``run`` serves."""
        kind, first, project = who
        if kind == "bearer":
            if RANK.get(first, -1) < RANK["reader"]:
                raise Refused(403, f"this needs the reader role; the token has the {first} role")
            if project is not None and project != run.project:
                raise Refused(403, f"this token is limited to project {project}; this model is served by run "
                              f"{run.number} of project {run.project}")
        elif kind == "session":
            if self.proxy.access.session(first, run.id) is None:
                raise Refused(401, "this session is not for this model (or has ended): open it from the runyard "
                              "dashboard again")
            await self.proxy._check(first, run.id, upstream_of_run)

    async def _bearer(self, secret: str) -> tuple[str, str | None]:
        key = hashlib.sha256(secret.encode()).hexdigest()
        now = time.monotonic()
        known = self._bearers.get(key)
        if known is not None and now - known[0] < CHECK_EVERY:
            return known[1], known[2]
        token = await anyio.to_thread.run_sync(self.proxy.policy.authenticate, secret)
        if token is None or not token.active:
            self._bearers.pop(key, None)
            raise Refused(401, "this token is unknown, expired or revoked")
        if len(self._bearers) > 10_000:
            self._bearers.clear()
        self._bearers[key] = (now, token.role, token.project)
        return token.role, token.project
