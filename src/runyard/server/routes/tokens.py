"""API tokens: list, create (the secret is in that answer only), revoke; for admins, and an admin of
one project administers that project's tokens only."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import FastAPI, Request
from pydantic import BaseModel, Field

from runyard import wire
from runyard.errors import AccessDenied, NotFound
from runyard.server.security import requires
from runyard.server.state import Server, principal_of


class NewToken(BaseModel):
    role: Literal["reader", "writer", "admin"]
    name: str | None = Field(None, max_length=100)
    project: str | None = Field(None, max_length=100)


def add_routes(app: FastAPI, server: Server) -> None:
    v1 = wire.API_PREFIX

    @app.get(f"{v1}/tokens", tags=["access"])
    @requires("admin")
    def tokens(request: Request, include_revoked: bool = False) -> list[dict[str, Any]]:
        """Active tokens, or all with ``include_revoked`` (never their secrets); an admin of one project
        sees that project's."""
        scope = principal_of(request).project
        return [_token_out(t) for t in server.tokens.list(include_revoked) if scope is None or t.project == scope]

    @app.post(f"{v1}/tokens", tags=["access"])
    @requires("admin")
    def create_token(request: Request, body: NewToken) -> dict[str, Any]:
        """A new token; its secret is in this response and nowhere else. An admin of one project
        makes tokens of that project only."""
        scope = principal_of(request).project
        if scope is not None and body.project not in (None, scope):
            raise AccessDenied(f"this token administers project {scope} only")
        info, secret = server.tokens.create(body.role, body.name, scope or body.project)
        return {**_token_out(info), "token": secret}

    @app.delete(f"{v1}/tokens/{{ref}}", tags=["access"])
    @requires("admin")
    def revoke_token(request: Request, ref: str) -> dict[str, Any]:
        """Revoke a token by id, name or prefix: requests carrying it get 401 from now on."""
        scope = principal_of(request).project
        if scope is not None and server.tokens.find(ref).project != scope:
            raise NotFound(f"no token {ref!r} (see `runyard token list`)")
        return _token_out(server.tokens.revoke(ref))


def _token_out(t: Any) -> dict[str, Any]:
    return {"id": t.id, "name": t.name, "role": t.role, "project": t.project, "prefix": t.prefix,
            "created_at": t.created_at, "last_used_at": t.last_used_at, "revoked_at": t.revoked_at}
