"""The model registry: models, their versions (each a run's artifacts under a path), and aliases.

A model spans projects, so a token limited to one project may not use it: what an alias names, or
which runs are registered, would cross the project's bounds. Registering needs the run to be visible
to the caller (``Server.run_for``); who registered is the token's name, never what the client says.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from pydantic import BaseModel, Field

from runyard import wire
from runyard.errors import AccessDenied
from runyard.server.security import requires
from runyard.server.state import Server, principal_of


class NewVersion(BaseModel):
    run: str = Field(description="The run: number, name or id prefix", max_length=200)
    path: str = Field("", description="A file or directory of the run's artifacts (empty: all of them)",
                      max_length=1024)
    description: str = Field("", max_length=100_000)
    aliases: list[str] = Field(default_factory=list, max_length=100,
                               description="Aliases to point at the new version")


class AliasTarget(BaseModel):
    version: int = Field(ge=1, le=(1 << 31) - 1)


def _unlimited(request: Request) -> None:
    scope = principal_of(request).project
    if scope is not None:
        raise AccessDenied(f"this token is limited to project {scope}; the model registry spans projects and "
                           "needs a token of no project (`runyard token create --role writer`)")


def add_routes(app: FastAPI, server: Server) -> None:
    store = server.store
    v1 = wire.API_PREFIX

    @app.get(f"{v1}/models", tags=["models"])
    @requires("reader")
    def list_models(request: Request) -> list[dict[str, Any]]:
        """Every registered model with its newest version and its aliases."""
        _unlimited(request)
        return [wire.model_out(m) for m in store.list_models()]

    @app.get(f"{v1}/models/{{name}}/versions", tags=["models"])
    @requires("reader")
    def versions(request: Request, name: str) -> list[dict[str, Any]]:
        """Every version of a model, newest first."""
        _unlimited(request)
        return [wire.model_version_out(v) for v in store.model_versions(name)]

    @app.get(f"{v1}/models/{{name}}/versions/{{selector}}", tags=["models"])
    @requires("reader")
    def version(request: Request, name: str, selector: str) -> dict[str, Any]:
        """One version: by number, by alias, or ``latest``."""
        _unlimited(request)
        return wire.model_version_out(store.model_version(name, selector))

    @app.post(f"{v1}/models/{{name}}/versions", tags=["models"])
    @requires("writer")
    def register(request: Request, name: str, body: NewVersion) -> dict[str, Any]:
        """Register the next version of a model (created if new): the run's artifacts under ``path``."""
        _unlimited(request)
        run = server.run_for(request, body.run)
        return wire.model_version_out(store.register_model(name, run.number, body.path, body.description,
                                                           principal_of(request).name, body.aliases))

    @app.put(f"{v1}/models/{{name}}/aliases/{{alias}}", tags=["models"])
    @requires("writer")
    def set_alias(request: Request, name: str, alias: str, body: AliasTarget) -> dict[str, Any]:
        """Point an alias at a version, moving it from the one it named."""
        _unlimited(request)
        return wire.model_version_out(store.set_model_alias(name, alias, body.version))

    @app.delete(f"{v1}/models/{{name}}/aliases/{{alias}}", tags=["models"])
    @requires("writer")
    def remove_alias(request: Request, name: str, alias: str) -> dict[str, Any]:
        """Remove an alias; answers the version it named."""
        _unlimited(request)
        return {"version": store.remove_model_alias(name, alias)}
