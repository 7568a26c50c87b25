"""How clients tell this server from another, and how a browser logs in.

``GET /api/proof``: the server proves it holds a token (see ``runyard.credential``) before a client
sends it. ``POST /api/v1/login-codes``: a token holder (``runyard ui``) gets a one-time code;
``GET /api/login?code=...[&next=/runs/12]``, opened in the browser, uses the code up, sets the
session cookie (HttpOnly, SameSite=Strict, this server's paths) and redirects to the dashboard's
clean URL (or the page ``next`` names on this server).
"""

from __future__ import annotations

import re
import secrets
from typing import Annotated

from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from runyard import credential
from runyard.errors import Conflict
from runyard.server.security import SESSION_COOKIE, SESSION_TTL, Policy, Principal, requires

LOGIN_PATH = "/api/login"
#: Where a login link may lead (``&next=/runs/12``): a path of this server.
LOCAL_PATH = re.compile(r"/(?![/\\])[A-Za-z0-9/._~%?=&,:+-]*")


def add_routes(app: FastAPI, policy: Policy) -> None:
    @app.get(credential.PROOF_PATH, tags=["server"])
    @requires("public")
    def proof(request: Request, prefix: Annotated[str, Query(max_length=32)],
              nonce: Annotated[str, Query(min_length=16, max_length=64)]) -> dict[str, str]:
        """Proof that this server holds the token with this prefix: an HMAC keyed by the token's digest
        over the nonce and the Host asked (for an unknown token, a random answer of the same form)."""
        digest = policy.tokens.digest_of(prefix) or secrets.token_hex(32)
        host = credential.normal_host(request.headers.get("host", ""))
        return {"proof": credential.proof(digest, nonce, host)}

    @app.post("/api/v1/login-codes", tags=["server"])
    @requires("reader")
    def login_code(request: Request) -> dict[str, str]:
        """A code that logs a browser in once, with this token's rights (``runyard ui`` prints it as
        a link); it lapses after two minutes."""
        principal: Principal = request.state.principal
        if principal.token_id is None:
            raise Conflict("this server was started with --insecure-local: a browser needs no login")
        code = policy.login_code(principal.token_id)
        return {"code": code, "path": f"{LOGIN_PATH}?code={code}"}

    @app.get(LOGIN_PATH, tags=["server"], include_in_schema=False)
    @requires("public")
    def login(code: Annotated[str, Query(max_length=64)] = "",
              next: Annotated[str, Query(max_length=2000)] = "/") -> Response:
        session = policy.redeem(code)
        if session is None:
            return JSONResponse({"error": "this login link is used up or has expired: run `runyard ui` again "
                                 "for a new one", "status": 401}, status_code=401)
        # Only a path of this server: never another site (an open redirect), nor //host, nor a backslash.
        target = next if LOCAL_PATH.fullmatch(next) else "/"
        response = RedirectResponse(target, status_code=303)
        # Strict: a page of another site cannot make the browser send it; HttpOnly: no script reads it.
        response.set_cookie(SESSION_COOKIE, session, max_age=int(SESSION_TTL), path="/", httponly=True,
                            samesite="strict", secure=False)
        response.headers["cache-control"] = "no-store"
        return response
