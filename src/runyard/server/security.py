"""The server's gate: every request passes here before any handler runs.

In order: the ``Host`` header must name the server (DNS rebinding), a browser's ``Origin`` must be
the server's own (cross-site requests), state-changing requests must carry a JSON or msgpack body
(a form or text/plain body is how a web page forges a request), the token must be valid, and the
matched route's declared role must be within the token's. The token comes from the
``Authorization`` header or, for a browser logged in through a one-time link (``runyard ui``), from
its session cookie (HttpOnly, SameSite=Strict: a page of another site cannot make the browser send
it). Every request needs one, on loopback too, unless the server was started with
``--insecure-local``. A route that declares no role is
refused for everyone: forgetting the declaration fails closed, and a test walks every route.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import secrets
import threading
import time
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import orjson
from starlette.datastructures import Headers
from starlette.routing import Match

from runyard.errors import Busy
from runyard.names import is_number
from runyard.server.ratelimit import RateLimit, retry_after
from runyard.wire import is_loopback

if TYPE_CHECKING:
    from anyio import CapacityLimiter
    from starlette.routing import BaseRoute
    from starlette.types import ASGIApp, Receive, Scope, Send

    from runyard.server.capacity import Capacity
    from runyard.store.tokens import TokenInfo, Tokens

#: The role a route needs: "public" (no token), "reader", "writer" or "admin".
ROLE_ATTRIBUTE = "runyard_role"
RANK = {"public": 0, "reader": 1, "writer": 2, "admin": 3}
#: Bodies a state-changing request may carry. octet-stream is for artifact uploads: like JSON it is
#: not a type a page can send across sites without the browser asking the server first.
BODY_TYPES = frozenset({"application/json", "application/msgpack", "application/octet-stream"})
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
#: Largest body of any request but an upload (PUT streams to disk): ingest (msgpack) takes 33 MiB
#: (see ingest.py). A JSON body is parsed by FastAPI on the event loop, at about 10 MiB/s for the
#: worst JSON (``[]`` after ``[]``, each a 56-byte list), so JSON bodies take far less, enough for
#: the longest note (1,000,000 characters) or 10,000 blob names (the client's batches of
#: /blobs/missing); those past LIGHT_BODY wait for a decode slot (capacity.py).
MAX_BODY = 33 << 20
MAX_JSON_BODY = 2 << 20
LIGHT_BODY = 256 << 10
#: Values a JSON body may hold: the longest lists the API takes (10,000 blob names, alert ids or
#: command words) and some more. Counted before FastAPI parses the body (see ``JsonValues``).
MAX_JSON_VALUES = 25_000
#: Set in a request's state when the database answered for its token (the health check need not ask again).
DATABASE_ANSWERED = "database_answered"
#: The browser session cookie set by a login link.
SESSION_COOKIE = "runyard_session"
#: Seconds a login code of `runyard ui` may wait for its browser, and a browser session may last.
LOGIN_CODE_TTL = 120.0
SESSION_TTL = 7 * 86_400.0


class BodyTooLarge(Exception):
    """A body without a Content-Length grew past its limit while being read."""


def _too_large(limit: int) -> str:
    return f"the body is larger than {limit >> 20} MiB; send smaller batches"


def _capped(receive: Receive, limit: int) -> Receive:
    received = 0

    async def wrapped() -> MutableMapping[str, Any]:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise BodyTooLarge(_too_large(limit))
        return message

    return wrapped


async def _read_json(receive: Receive, limit: int) -> bytes | None:
    """A JSON body, or None once it holds more than MAX_JSON_VALUES values (the rest is read and
    dropped, so that the client gets the answer rather than a reset connection)."""
    chunks: list[bytes] | None = []
    capped = _capped(receive, limit)
    values = JsonValues()
    while True:
        message = await capped()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        if chunks is not None:
            if values.feed(chunk) > MAX_JSON_VALUES:
                chunks = None
            else:
                chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return None if chunks is None else b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """The body already read, as one message; then whatever the client sends (its disconnection)."""
    replayed = False

    async def replay() -> MutableMapping[str, Any]:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


class JsonValues:
    """How many values a JSON body holds (array elements and object members, counted by the commas and
    opening brackets outside strings), counted chunk by chunk as the body arrives, without parsing it:
    parsing and validating cost about 2 µs per value, and counting a whole 2 MiB body at once held the
    event loop for some 40 ms; a chunk at a time, a body past the limit is known after its first ones."""

    def __init__(self) -> None:
        self.count = 0
        self._in_string = False
        #: A backslash that ended the last chunk after pairs were removed: it escapes the next byte.
        self._escape = b""

    def feed(self, chunk: bytes) -> int:
        data = self._escape + chunk
        # Escaped backslashes, then escaped quotes, cannot end a string: without them, the text between
        # a quote and the next is a string, and every other piece is outside. Only the parity of a run
        # of backslashes at the end matters (pairs cancel); an odd one is kept for the next chunk.
        body = data.rstrip(b"\\")
        self._escape = b"\\" if (len(data) - len(body)) % 2 else b""
        plain = body.replace(b"\\\\", b"").replace(b'\\"', b"")
        pieces = plain.split(b'"')
        outside = b"".join(pieces[1 if self._in_string else 0::2])
        self._in_string ^= (len(pieces) - 1) % 2 == 1
        self.count += outside.count(b",") + outside.count(b"[") + outside.count(b"{")
        return self.count


def json_values(body: bytes) -> int:
    """How many values a whole JSON body holds (see ``JsonValues``)."""
    return JsonValues().feed(body)


def requires(role: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare the role a route handler needs (copied onto its route by ``declare_roles``)."""
    if role not in RANK:
        raise ValueError(f"unknown role {role!r}")

    def mark(fn: Callable[..., Any]) -> Callable[..., Any]:
        setattr(fn, ROLE_ATTRIBUTE, role)
        return fn

    return mark


def route_role(route: BaseRoute) -> str | None:
    role = getattr(route, ROLE_ATTRIBUTE, None)
    if role is None:
        role = getattr(getattr(route, "endpoint", None), ROLE_ATTRIBUTE, None)
    return role


def binds_all(host: str) -> bool:
    """Whether ``host`` is the unspecified address (0.0.0.0, ::): listening on every interface."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        return False


@dataclass
class Principal:
    """Who is asking: a token, or the single local user of a server that has none."""

    role: str
    project: str | None = None
    token_id: int | None = None
    name: str = "local user"


LOCAL_USER = Principal("admin")
#: Whoever asks for a public route (the dashboard's files): may read nothing else.
ANONYMOUS = Principal("public", name="anonymous")


@dataclass
class Policy:
    bind_host: str
    port: int
    tokens: Tokens
    #: Extra names the Host header may carry (a DNS name the server is reached by).
    allowed_hosts: tuple[str, ...] = ()
    #: Seconds a "no tokens exist" answer is trusted before asking the database again.
    tokens_check_interval: float = 1.0
    #: ``--insecure-local``: on loopback, serve without a token while none exists (anyone who can
    #: connect, every user of the machine, is admin).
    insecure_local: bool = False
    _tokens_exist: bool = False
    _checked_at: float = field(default=-1e9)
    #: One-time login codes and browser sessions: secret -> (token id, expiry, monotonic).
    _codes: dict[str, tuple[int, float]] = field(default_factory=dict)
    _sessions: dict[str, tuple[int, float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def loopback(self) -> bool:
        return is_loopback(self.bind_host)

    def host_allowed(self, host_header: str | None, port: int | None = None) -> bool:
        """Whether the Host header names this server (on ``port``: the API's unless given, e.g. the
        lab origin's, server/lab.py)."""
        if not host_header:
            return False
        host, _, port_given = host_header.rpartition(":") if not host_header.endswith("]") else (host_header, "", "")
        if not host or (port_given and not is_number(port_given)):
            host, port_given = host_header, ""
        host = host.strip("[]").lower()
        if port_given and int(port_given) != (self.port if port is None else port):
            return False
        if host in self.allowed_hosts:
            return True
        if self.loopback:
            return host in LOOPBACK_NAMES or is_loopback(host)
        if binds_all(self.bind_host):
            # Only the names given with --allow-host (checked above), and loopback for this machine's
            # own use: accepting any name would let a rebound DNS name reach the server.
            return host in LOOPBACK_NAMES or is_loopback(host)
        return host == self.bind_host.strip("[]").lower() or host in LOOPBACK_NAMES

    @property
    def auth_settled(self) -> bool:
        """Whether every request needs a token for sure, without asking the database (so without a
        thread: ``auth_required`` may ask it)."""
        return not (self.loopback and self.insecure_local) or self._tokens_exist

    def auth_required(self) -> bool:
        """Always, but on loopback with ``--insecure-local`` only once any token exists."""
        if not (self.loopback and self.insecure_local):
            return True
        now = time.monotonic()
        if self._tokens_exist or now - self._checked_at < self.tokens_check_interval:
            return self._tokens_exist
        self._tokens_exist = self.tokens.any_active()
        self._checked_at = now
        return self._tokens_exist

    def authenticate(self, secret: str) -> TokenInfo | None:
        token = self.tokens.authenticate(secret)
        if token is not None and (token.last_used_at is None or time.time() - token.last_used_at > 60):
            # Last use is a convenience for `token list`: never worth failing or delaying a request.
            with contextlib.suppress(Exception):
                self.tokens.touch(token.id)
        return token

    def login_code(self, token_id: int) -> str:
        """A code that logs one browser in once, as the token ``token_id``, within LOGIN_CODE_TTL."""
        code = secrets.token_urlsafe(24)
        now = time.monotonic()
        with self._lock:
            self._codes = {c: v for c, v in self._codes.items() if v[1] > now}
            self._codes[code] = (token_id, now + LOGIN_CODE_TTL)
        return code

    def redeem(self, code: str) -> str | None:
        """A new session for a login code, which is used up; None for an unknown or expired code."""
        now = time.monotonic()
        with self._lock:
            entry = self._codes.pop(code, None)
            if entry is None or entry[1] <= now:
                return None
            session = secrets.token_urlsafe(32)
            self._sessions = {s: v for s, v in self._sessions.items() if v[1] > now}
            self._sessions[session] = (entry[0], now + SESSION_TTL)
        return session

    def session_token(self, session: str) -> TokenInfo | None:
        """The token a browser session acts as, while it lasts and the token is not revoked."""
        with self._lock:
            entry = self._sessions.get(session)
        if entry is None or entry[1] <= time.monotonic():
            return None
        with contextlib.suppress(Exception):
            token = self.tokens.get(entry[0])
            if token.active:
                return token
        return None


class SeveralCookies(ValueError):
    """The browser sent one cookie name with several values: one was set by a page of another port
    of this host (cookies know no port: a notebook's output on the lab origin, say), for a longer
    path, so that it comes first. Neither is trusted."""


def cookie(headers: Headers, name: str) -> str | None:
    """The value of cookie ``name``, or None; SeveralCookies when it comes with several values."""
    found = {value for key, _, value in (part.strip().partition("=") for part in headers.get("cookie", "").split(";"))
             if key == name and value}
    if len(found) > 1:
        raise SeveralCookies(f"the browser sent several {name} cookies: one was set by another page of this host. "
                             "Remove this site's cookies in the browser, then open the link again")
    return found.pop() if found else None


async def send_error(send: Send, status: int, message: str, extra_headers: list[tuple[bytes, bytes]] = ()) -> None:  # type: ignore[assignment]
    body = orjson.dumps({"error": message, "status": status})
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"x-content-type-options", b"nosniff"), *extra_headers]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _too_many(send: Send, wait: float) -> None:
    await send_error(send, 429, f"this token sends more requests than the server takes from one token; try again "
                     f"in {retry_after(wait)} s", [(b"retry-after", retry_after(wait).encode())])


class Gate:
    """ASGI middleware enforcing ``Policy`` in front of the app's router."""

    def __init__(self, app: ASGIApp, policy: Policy, routes: Callable[[], list[BaseRoute]],
                 decoding: Capacity | None = None, lanes: Mapping[str, CapacityLimiter] | None = None,
                 rates: RateLimit | None = None, remembered: Mapping[str, Any] | None = None) -> None:
        self.app = app
        self.policy = policy
        self.routes = routes
        #: Where a big JSON body waits its turn to be decoded (the ingest route takes its own slot).
        self.decoding = decoding
        #: Paths whose token is checked on threads of their own (the health check's), not the shared ones.
        self.lanes = dict(lanes or {})
        #: Requests per second per token (or browser session).
        self.rates = rates
        #: Paths whose accepted tokens are remembered a moment (``token(key)``/``accepted(key, token)``:
        #: the health check's, see health_watch.py), so that a check sent again asks no database.
        self.remembered = dict(remembered or {})

    def _match(self, scope: Scope) -> BaseRoute | None:
        partial = None
        for route in self.routes():
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return route
            if match is Match.PARTIAL and partial is None:
                partial = route
        return partial

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        policy = self.policy
        if not policy.host_allowed(headers.get("host")):
            await send_error(send, 400, "the Host header does not name this server")
            return
        origin = headers.get("origin")
        if origin is not None and origin != f"{scope.get('scheme', 'http')}://{headers.get('host')}":
            await send_error(send, 403, "cross-origin requests are refused")
            return
        route = self._match(scope)
        role = route_role(route) if route is not None else "public"
        lane = self.lanes.get(scope["path"])
        principal = LOCAL_USER
        if route is not None and role == "public" and scope["method"] in ("GET", "HEAD"):
            # The dashboard's static shell: no data, and the browser needs it before it has a token.
            principal = ANONYMOUS
        elif policy.auth_settled or await anyio.to_thread.run_sync(policy.auth_required, limiter=lane):
            authorization = headers.get("authorization", "")
            scheme, _, secret = authorization.partition(" ")
            try:
                session = cookie(headers, SESSION_COOKIE)
            except SeveralCookies as e:
                await send_error(send, 400, str(e))
                return
            if authorization or session is None:
                if scheme.lower() != "bearer" or not secret.strip():
                    await send_error(send, 401, "this server needs a token: send `Authorization: Bearer <token>` "
                                     "(set RUNYARD_TOKEN; an admin creates one with `runyard token create`)",
                                     [(b"www-authenticate", b"Bearer")])
                    return
                credential = secret.strip()
            else:
                credential = session
            key = hashlib.sha256(credential.encode()).digest()
            if self.rates is not None and (wait := self.rates.wait(key)):  # refused before asking the database
                await _too_many(send, wait)
                return
            memory = self.remembered.get(scope["path"])
            token = memory.token(key) if memory is not None and authorization else None
            asked = token is None  # else accepted a moment ago, for this path only
            if asked and (authorization or session is None):
                token = await anyio.to_thread.run_sync(policy.authenticate, credential, limiter=lane)
                if token is not None and memory is not None:
                    memory.accepted(key, token)
            elif asked:
                token = await anyio.to_thread.run_sync(policy.session_token, credential, limiter=lane)
            if token is None:
                what = "the token is unknown or revoked" if authorization else \
                    "the browser session has expired: run `runyard ui` again for a new link"
                await send_error(send, 401, what, [(b"www-authenticate", b"Bearer")])
                return
            if self.rates is not None and (wait := self.rates.take(key)):
                await _too_many(send, wait)
                return
            principal = Principal(token.role, token.project, token.id, token.name)
            if asked:
                scope.setdefault("state", {})[DATABASE_ANSWERED] = True  # it was asked for the token, just now
        if role is None:
            await send_error(send, 403, "this route declares no access rule, so it is closed")
            return
        if RANK[principal.role] < RANK[role]:
            await send_error(send, 403, f"this needs the {role} role; the token has the {principal.role} role")
            return
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if scope["method"] in STATE_CHANGING and content_type not in BODY_TYPES:
            await send_error(send, 415, "send the body as application/json or application/msgpack")
            return
        state: MutableMapping[str, Any] = scope.setdefault("state", {})
        state["principal"] = principal
        if scope["method"] == "PUT":  # uploads stream to disk, chunk by chunk: no cap in memory
            await self.app(scope, receive, send)
            return
        limit = MAX_BODY if content_type == "application/msgpack" else MAX_JSON_BODY
        length = headers.get("content-length", "")
        if is_number(length) and int(length) > limit:
            await send_error(send, 413, _too_large(limit))
            return
        if content_type != "application/json" or scope["method"] not in STATE_CHANGING:
            await self.app(scope, _capped(receive, limit), send)
            return
        heavy = self.decoding is not None and not (is_number(length) and int(length) <= LIGHT_BODY)
        try:
            async with self.decoding.slot() if heavy and self.decoding is not None else contextlib.nullcontext():
                body = await _read_json(receive, limit)
                if body is None:
                    await send_error(send, 413, f"the body holds more than {MAX_JSON_VALUES:,} values (array elements "
                                     "and object members); send fewer at once")
                    return
                await self.app(scope, _replay(body, receive), send)
        except BodyTooLarge as e:
            await send_error(send, 413, str(e))
        except Busy as e:
            await send_error(send, 503, str(e), [(b"retry-after", str(round(e.retry_after)).encode())])


