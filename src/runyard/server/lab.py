"""The lab origin: each run's JupyterLab, proxied under ``/lab/<run id>/`` on a listener of its own.

JupyterLab pages run what notebook outputs hold, so they are never served from the dashboard's
origin, where a script could use the dashboard's session. ``runyard server --lab-port`` serves
this app on another port (another origin) beside the API; the API's app has no lab route.

``GET /lab/<id>/?ticket=T`` redeems a ticket of ``POST /api/v1/runs/{ref}/lab``
(``lab_access.py``), sets the lab session cookie (HttpOnly, SameSite=Lax, path ``/lab/<id>/``: the
browser sends it to that run's path only) and redirects to JupyterLab. Every other request under
``/lab/<id>/`` needs that cookie, whose token must still be active and whose run must still run;
it is proxied, HTTP (streamed, any method) and websockets (kernels, terminals), to the JupyterLab
the run's ``lab.json`` names on loopback, with ``Authorization: token <its token>`` added and the
runyard cookie removed. JupyterLab runs under the same base path (``notebook.lab.base_url``).
Token-authenticated requests are exempt from Jupyter's XSRF and Origin checks; this app does the
Origin check itself (a browser's Origin must be the lab origin) and sends none upstream.

Model servers (``runyard serve``) are served on this origin too, under ``/serve/NAME/``, for the
same reason: their pages are the run's code (``server/served.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import anyio
from starlette.datastructures import Headers

from runyard.server.lab_access import TICKET_TTL, Grant, LabAccess
from runyard.server.security import Policy, SeveralCookies, cookie

if TYPE_CHECKING:
    import httpx
    from starlette.types import Receive, Scope, Send

    from runyard.server.state import Server

#: The lab session cookie (one per run: each is scoped to its run's path).
LAB_COOKIE = "runyard_lab"
#: The browser's cookies JupyterLab is sent. Cookies know no port: the browser sends the lab origin
#: the dashboard's session cookie too (and any other of this host's), which must never reach a
#: JupyterLab, whose server extensions are the run's own code.
UPSTREAM_COOKIES = frozenset({"_xsrf"})
#: A lab path: the run id (a ULID), then JupyterLab's own path.
LAB_PATH = re.compile(r"/lab/([0-9A-HJKMNP-TV-Z]{26})(/.*)?")
#: A served model's path: its name (``exec.serving.SERVE_NAME``), then the model server's own path.
SERVE_PATH = re.compile(r"/serve/([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)(/.*)?")
#: Headers not passed on either way: those of one connection (RFC 9110 7.6.1), and those this proxy sets
#: itself (credentials, Host, Origin, the websocket handshake, the length).
NOT_PASSED_ON = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "transfer-encoding",
    "upgrade", "host", "authorization", "cookie", "origin", "sec-websocket-key", "sec-websocket-version",
    "sec-websocket-extensions", "sec-websocket-protocol", "sec-websocket-accept", "content-length",
    # What a client says of where it is: JupyterLab is told nothing it could trust.
    "forwarded", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-real-ip"})
#: Seconds a session's check (token active, run running, where its JupyterLab is) is trusted before
#: asking again: a page loads dozens of files at once.
CHECK_EVERY = 2.0
#: Seconds between two checks of the session of an open websocket (a revoked token or an ended run
#: closes it).
WEBSOCKET_CHECK_EVERY = 10.0
#: Largest websocket message either way (a kernel's output with images).
MAX_MESSAGE = 64 << 20
#: How long JupyterLab may take: to accept a connection, and to answer (a kernel starting).
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 300.0


@dataclass(frozen=True)
class Upstream:
    """Where a run's JupyterLab answers, and its token."""

    port: int
    token: str
    #: Loopback for a run on the server's machine; a Ray node's address for one announced from there.
    host: str = "127.0.0.1"
    #: A path it serves under (a Ray Serve application's route, ``/NAME``); "" at its root.
    prefix: str = ""


class Refused(Exception):
    """A request the lab origin answers itself: its status and message."""

    def __init__(self, status: int, message: str, close_code: int = 1008) -> None:
        super().__init__(message)
        self.status = status
        #: The same said to a websocket (RFC 6455 7.4.1): 1008 a refusal, 1011 the far end failed.
        self.close_code = close_code


def ended_message(number: int, status: str) -> str:
    return f"run {number} has ended ({status}): its JupyterLab is gone; its files are the run's outputs"


class LabProxy:
    """The ASGI app of the lab origin (module doc)."""

    def __init__(self, server: Server, policy: Policy, access: LabAccess, port: int) -> None:
        self.server = server
        self.policy = policy
        self.access = access
        self.port = port
        #: session -> (checked at, upstream): sessions checked a moment ago.
        self._checked: dict[str, tuple[float, Upstream]] = {}
        self._client: httpx.AsyncClient | None = None
        from runyard.server.served import ServedProxy

        #: ``/serve/NAME/``: model servers (server/served.py).
        self.served = ServedProxy(self)

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            import httpx

            self._client = httpx.AsyncClient(
                trust_env=False, follow_redirects=False,
                timeout=httpx.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT, pool=CONNECT_TIMEOUT),
                limits=httpx.Limits(max_connections=200, max_keepalive_connections=20))
        return self._client

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] not in ("http", "websocket"):
            return
        try:
            await self._handle(scope, receive, send)
        except Refused as e:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": e.close_code, "reason": str(e)[:120]})
            elif SERVE_PATH.fullmatch(scope["path"]):  # a model's callers are mostly scripts: JSON, as its own
                await _json_error(send, e.status, str(e))
            else:
                await _page(send, e.status, str(e))

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._client is not None:
                    await self._client.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = Headers(scope=scope)
        if not self.policy.host_allowed(headers.get("host"), self.port):
            raise Refused(400, "the Host header does not name this server")
        origin = headers.get("origin")
        scheme = "https" if scope.get("scheme") in ("https", "wss") else "http"
        if origin is not None and origin != f"{scheme}://{headers.get('host')}":
            raise Refused(403, "cross-origin requests are refused")
        served = SERVE_PATH.fullmatch(scope["path"])
        if served is not None:
            await self.served.handle(scope, receive, send, served.group(1), served.group(2) or "")
            return
        matched = LAB_PATH.fullmatch(scope["path"])
        if matched is None:
            raise Refused(404, "nothing here: a JupyterLab is under /lab/<run id>/ (open it from the runyard "
                          "dashboard or with `runyard notebook --url RUN`), a model under /serve/NAME/")
        run_id, rest = matched.group(1), matched.group(2) or ""
        if any(part in (".", "..") for part in rest.split("/")):
            raise Refused(400, "a path with . or .. segments is refused")
        if rest == "" and scope["type"] == "http":  # /lab/<id>: the run's path is /lab/<id>/
            query = scope.get("query_string", b"").decode("latin-1")
            await _redirect(send, f"/lab/{run_id}/" + (f"?{query}" if query else ""))
            return
        if rest == "/" and scope["type"] == "http" and "ticket" in parse_qs(scope["query_string"].decode("latin-1")):
            await self._redeem(scope, send, run_id)
            return
        try:
            session = cookie(headers, LAB_COOKIE)
        except SeveralCookies as e:
            raise Refused(400, str(e)) from None
        if session is None or self.access.session(session, run_id) is None:
            raise Refused(401, "this JupyterLab needs a session: open it from the runyard dashboard, or get a new "
                          "link with `runyard notebook --url RUN` (each link works once, within "
                          f"{TICKET_TTL / 60:g} minutes)")
        upstream = await self._check(session, run_id)
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send, upstream, session, run_id)
        else:
            await self._http(scope, receive, send, upstream)

    async def _redeem(self, scope: Scope, send: Send, run_id: str) -> None:
        ticket = parse_qs(scope["query_string"].decode("latin-1")).get("ticket", [""])[0]
        redeemed = self.access.redeem(ticket, run_id)
        if redeemed is None:
            raise Refused(401, "this link is used up or has expired: open the JupyterLab from the runyard dashboard "
                          "again, or get a new link with `runyard notebook --url RUN`")
        session, _ = redeemed
        await self._check(session, run_id)  # the run may have ended since
        # Lax, not Strict: a link opened from another site (chat, mail) leads through this redirect,
        # and a Strict cookie would not be sent on its next step. Cross-site requests that change
        # anything carry an Origin, refused above; the path keeps it to this run's JupyterLab.
        session_cookie = (f"{LAB_COOKIE}={session}; Path=/lab/{run_id}/; HttpOnly; SameSite=Lax"
                  + ("; Secure" if scope.get("scheme") == "https" else ""))
        await _redirect(send, f"/lab/{run_id}/lab", [(b"set-cookie", session_cookie.encode())])

    async def _check(self, session: str, run_id: str,
                     find: Callable[[Server, str], Upstream] | None = None) -> Upstream:
        """The session's JupyterLab (or what ``find`` finds for its run: a model server), once its
        token is active and its run running (else Refused)."""
        now = time.monotonic()
        known = self._checked.get(session)
        if known is not None and now - known[0] < CHECK_EVERY:
            return known[1]
        grant = self.access.session(session, run_id)
        if grant is None:
            raise Refused(401, "this JupyterLab session has ended: open it from the runyard dashboard again")
        try:
            upstream = await anyio.to_thread.run_sync(self._look_up, grant, find or upstream_of)
        except Refused as e:
            self._checked.pop(session, None)
            if e.status in (401, 410):  # for good: its token revoked, or its run ended
                self.access.end(session)
            raise
        if len(self._checked) > 10_000:
            self._checked.clear()
        self._checked[session] = (now, upstream)
        return upstream

    def _look_up(self, grant: Grant, find: Callable[[Server, str], Upstream]) -> Upstream:
        from runyard.errors import NotFound

        try:
            if grant.token_id is None:
                if self.policy.auth_required():
                    raise Refused(401, "tokens exist now: open this JupyterLab from the runyard dashboard again")
            else:
                try:
                    active = self.policy.tokens.get(grant.token_id).active
                except NotFound:  # deleted: as revoked
                    active = False
                if not active:
                    raise Refused(401, "the token this JupyterLab was opened with is revoked")
            return find(self.server, grant.run_id)
        except Refused:
            raise
        except Exception as e:  # noqa: BLE001 - the database away: said as such, the session kept
            raise Refused(503, f"runyard cannot check this session now ({type(e).__name__}): try again in a "
                          "moment") from None

    async def _http(self, scope: Scope, receive: Receive, send: Send, upstream: Upstream,
                    target: str | None = None) -> None:
        """Pass the request on to ``upstream`` (at ``target``: by default the same path there) and
        its answer back, streamed both ways."""
        import httpx

        headers = _forwarded(scope, upstream)
        length = Headers(scope=scope).get("content-length")
        limit = self.server.limits.max_upload
        if length is not None and length.isdigit() and int(length) > limit:
            raise Refused(413, f"the body is larger than {limit >> 20} MiB")
        has_body = length not in (None, "0") or "transfer-encoding" in Headers(scope=scope)
        if length is not None:
            headers.append(("content-length", length))
        request = self.client.build_request(scope["method"], target or _target(scope, upstream), headers=headers,
                                            content=_body(receive, limit) if has_body else None)
        try:
            response = await self.client.send(request, stream=True)
        except _TooLarge:
            raise Refused(413, f"the body is larger than {limit >> 20} MiB") from None
        except httpx.HTTPError as e:
            what = "model server" if target else "JupyterLab"
            raise Refused(502, f"the run's {what} does not answer ({type(e).__name__}): it may be stopping; "
                          "see runyard logs RUN") from None
        try:
            out = []
            for k, v in response.headers.multi_items():
                name = k.lower()
                if name in NOT_PASSED_ON:
                    continue
                if name == "set-cookie":
                    kept = _upstream_cookie(v, scope["path"]) if target is None else None  # a model server sets none
                    if kept is not None:
                        out.append((name, kept))
                    continue
                out.append((name, _local(v, upstream) if name == "location" else v))
            if "content-length" in response.headers:  # the raw body is passed on, encoded as it came
                out.append(("content-length", response.headers["content-length"]))
            await send({"type": "http.response.start", "status": response.status_code,
                        "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in out]})
            try:
                async for chunk in response.aiter_raw():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except httpx.HTTPError:
                pass  # JupyterLab went mid-answer: end what was sent
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await response.aclose()

    async def _websocket(self, scope: Scope, receive: Receive, send: Send, upstream: Upstream, session: str,
                         run_id: str) -> None:
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

        first = await receive()
        if first["type"] != "websocket.connect":
            return
        url = _target(scope, upstream).replace("http://", "ws://", 1)
        protocols = [p.strip() for p in Headers(scope=scope).get("sec-websocket-protocol", "").split(",") if p.strip()]
        try:
            remote = await connect(url, additional_headers=_forwarded(scope, upstream), subprotocols=protocols or None,  # type: ignore[arg-type]
                                   max_size=MAX_MESSAGE, open_timeout=CONNECT_TIMEOUT, compression=None,
                                   user_agent_header=None, proxy=None)
        except InvalidStatus as e:
            raise Refused(403, f"JupyterLab refused the websocket ({e.response.status_code})") from None
        except (OSError, InvalidHandshake, TimeoutError) as e:
            raise Refused(502, f"the run's JupyterLab does not answer ({type(e).__name__})", 1011) from None
        await send({"type": "websocket.accept", "subprotocol": remote.subprotocol})

        async def to_remote() -> None:
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    return
                data = message.get("bytes") if message.get("bytes") is not None else message.get("text")
                if data is not None:
                    await remote.send(data)

        async def to_browser() -> None:
            with contextlib.suppress(ConnectionClosed):
                async for data in remote:
                    if isinstance(data, bytes):
                        await send({"type": "websocket.send", "bytes": data})
                    else:
                        await send({"type": "websocket.send", "text": data})

        async def still_allowed() -> None:
            while True:
                await asyncio.sleep(WEBSOCKET_CHECK_EVERY)
                try:
                    await self._check(session, run_id)
                except Refused:
                    return

        tasks = [asyncio.ensure_future(t()) for t in (to_remote, to_browser, still_allowed)]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await remote.close()
            with contextlib.suppress(Exception):
                await send({"type": "websocket.close", "code": remote.close_code or 1000})


def upstream_of(server: Server, run_id: str) -> Upstream:
    """Where run ``run_id``'s JupyterLab answers on this machine (Refused: 404 when it is not a
    JupyterLab run answering here, 410 once the run has ended)."""
    from runyard.errors import NotFound
    from runyard.notebook.connection import read_connection
    from runyard.notebook.lab import base_url

    try:
        run = server.store.get_run(run_id)
    except NotFound:
        raise Refused(404, "no such run") from None
    if run.status.is_terminal():
        raise Refused(410, ended_message(run.number, run.status.value))
    if run.kind.value == "jupyterlab" and run.executor not in (None, "local"):
        announced = server.lab_access.announced(run.id)
        if announced is None:
            raise Refused(404, f"run {run.number}'s JupyterLab on {run.executor} has not said where it answers "
                          "(yet): it is starting, or its node cannot reach this server")
        return Upstream(announced.port, announced.token, announced.host)
    found = read_connection(server.settings.home, run.id)
    if run.kind.value != "jupyterlab" or found is None:
        raise Refused(404, f"run {run.number} has no JupyterLab answering on this server's machine")
    if found.get("base") != base_url(run.id) or not isinstance(found.get("port"), int) or \
            not isinstance(found.get("token"), str):
        raise Refused(404, f"run {run.number}'s JupyterLab was started by an older runyard, which serves it at "
                      "another path: stop it and start a new one (runyard notebook --resume RUN)")
    return Upstream(found["port"], found["token"])


class _TooLarge(Exception):
    pass


async def _body(receive: Receive, limit: int) -> AsyncIterator[bytes]:
    received = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return
        chunk = message.get("body", b"")
        received += len(chunk)
        if received > limit:
            raise _TooLarge
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return


def _target(scope: Scope, upstream: Upstream) -> str:
    from runyard.wire import url_host

    path = scope.get("raw_path") or scope["path"].encode()
    query = scope.get("query_string", b"")
    return f"http://{url_host(upstream.host)}:{upstream.port}{path.decode('latin-1')}" + (f"?{query.decode('latin-1')}"
                                                                          if query else "")


def _forwarded(scope: Scope, upstream: Upstream) -> list[tuple[str, str]]:
    """The request's headers for JupyterLab: its token instead of any credential, of the browser's
    cookies only Jupyter's own (UPSTREAM_COOKIES), no Origin (checked here), no hop-by-hop header."""
    # Also those the request's Connection header names: this hop's own (RFC 9110 7.6.1).
    hop = {name.strip().lower() for name in Headers(scope=scope).get("connection", "").split(",")}
    out = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]
           if k.decode("latin-1").lower() not in NOT_PASSED_ON | hop and not k.lower().startswith(b"sec-websocket-")]
    cookies = [part.strip() for part in Headers(scope=scope).get("cookie", "").split(";")]
    kept = "; ".join(c for c in cookies if c.partition("=")[0] in UPSTREAM_COOKIES)
    if kept:
        out.append(("cookie", kept))
    if upstream.token:  # a model server takes no credential: the lab origin checked the caller's
        out.append(("authorization", f"token {upstream.token}"))
    return out


def _upstream_cookie(header: str, path: str) -> str | None:
    """A cookie JupyterLab sets, as passed on to the browser: only Jupyter's own (UPSTREAM_COOKIES),
    kept to this run's path. Cookies know no port: one named as the dashboard's session, or another
    run's lab session, set by a run's server extension (the run's own code) would reach them too.
    Jupyter's login cookie (``username-*``) goes as well: every request carries the token."""
    name = header.split("=", 1)[0].strip()
    if name not in UPSTREAM_COOKIES:
        return None
    matched = LAB_PATH.fullmatch(path)
    run_path = f"/lab/{matched.group(1)}/" if matched else "/lab/"
    attributes = [a for a in header.split(";")[1:] if a.strip().split("=", 1)[0].strip().lower()
                  not in ("path", "domain")]
    return ";".join([header.split(";", 1)[0], *attributes, f" Path={run_path}"])


def _local(location: str, upstream: Upstream) -> str:
    """A redirect of JupyterLab's, as a path of the lab origin: its own address goes (a node's
    would send the browser to the node), and one to another site becomes the run's path."""
    from urllib.parse import urlsplit

    parts = urlsplit(location)
    if not parts.scheme and not parts.netloc:
        return location
    if parts.scheme in ("http", "https") and parts.port == upstream.port and parts.hostname in (
            upstream.host, "127.0.0.1", "localhost"):
        return location[len(f"{parts.scheme}://{parts.netloc}"):] or "/"
    return "/"  # another site: never where a JupyterLab of this origin sends a browser


async def _redirect(send: Send, location: str, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({"type": "http.response.start", "status": 303, "headers": [
        (b"location", location.encode("latin-1")), (b"cache-control", b"no-store"), (b"content-length", b"0"),
        (b"referrer-policy", b"no-referrer"), *(extra or [])]})
    await send({"type": "http.response.body", "body": b""})


async def _json_error(send: Send, status: int, message: str) -> None:
    import orjson

    body = orjson.dumps({"error": message})
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"cache-control", b"no-store"), (b"x-content-type-options", b"nosniff")]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _page(send: Send, status: int, message: str) -> None:
    """An error page a browser shows (this origin serves people, not the API's clients)."""
    body = (f"<!doctype html><meta charset=utf-8><title>runyard: JupyterLab</title>"
            f"<p>{html.escape(message)}</p>").encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"text/html; charset=utf-8"), (b"content-length", str(len(body)).encode()),
        (b"x-content-type-options", b"nosniff"), (b"cache-control", b"no-store"),
        (b"content-security-policy", b"default-src 'none'")]})
    await send({"type": "http.response.body", "body": body})


def lab_app(server: Server, policy: Policy, access: LabAccess, port: int) -> Callable[..., Any]:
    """The lab origin's ASGI app, for ``runyard server --lab-port``."""
    return LabProxy(server, policy, access, port)

