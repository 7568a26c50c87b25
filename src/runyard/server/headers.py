"""Security headers on every response: a plain ASGI middleware that edits the response's start
message as it passes.

Not ``@app.middleware("http")``: starlette's BaseHTTPMiddleware runs the app in a task of its own
and relays every body chunk through a stream and a task group, for each request and each chunk of
an upload, on the event loop that also answers health checks (issue 14: that relaying was the
largest part of the loop's time while clients uploaded at full speed)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.datastructures import MutableHeaders

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: The UI's pages get a strict Content-Security-Policy (unless a route sets a stricter one).
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "connect-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("x-content-type-options", "nosniff")
                headers.setdefault("referrer-policy", "no-referrer")
                if headers.get("content-type", "").startswith("text/html"):
                    # A page that brings its own policy keeps it (a rendered notebook's is stricter).
                    headers.setdefault("content-security-policy", CSP)
                    headers["x-frame-options"] = "DENY"
            await send(message)

        await self.app(scope, receive, send_with_headers)
