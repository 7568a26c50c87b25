"""Runs as a reader sees them, and the changes a writer makes to a run's record: projects, the list
of runs, one run, its children and inputs, its uncommitted diff; PATCH."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import FastAPI, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from runyard import wire
from runyard.errors import NotFound
from runyard.server.security import requires
from runyard.server.state import Server, principal_of
from runyard.store.api import RunQuery
from runyard.types import RunKind, RunStatus


class RunChange(BaseModel):
    """Fields to change; omitted fields stay as they are."""

    name: str | None = Field(None, description="New name (1-100 characters)", max_length=100)
    notes: str | None = Field(None, description="Replace the notes (Markdown)", max_length=1_000_000)
    append_note: str | None = Field(None, description="Append a paragraph to the notes", max_length=1_000_000)
    add_labels: list[str] = Field(default_factory=list, max_length=100)
    remove_labels: list[str] = Field(default_factory=list, max_length=100)


def add_routes(app: FastAPI, server: Server) -> None:
    store = server.store
    v1 = wire.API_PREFIX

    @app.get(f"{v1}/projects", tags=["runs"])
    @requires("reader")
    def projects(request: Request) -> list[dict[str, Any]]:
        """Every project and how many runs it holds."""
        scope = principal_of(request).project
        return [wire.plain_out(p) for p in store.list_projects() if scope is None or p.name == scope]

    @app.get(f"{v1}/runs", tags=["runs"])
    @requires("reader")
    def list_runs(
        request: Request,
        project: str | None = None,
        label: Annotated[list[str], Query(max_length=20)] = [],  # noqa: B006 - FastAPI reads it, never mutates
        status: Annotated[list[RunStatus], Query(max_length=8)] = [],  # noqa: B006
        kind: Annotated[list[RunKind], Query(max_length=8)] = [],  # noqa: B006
        sort: Annotated[str, Query(max_length=200, description="number, name, status, created_at, started_at, "
                                   "ended_at, priority, config.<key> or summary.<key>")] = "number",
        order: Literal["asc", "desc"] = "desc",
        limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
        cursor: Annotated[str | None, Query(max_length=2000)] = None,
        compact: Annotated[bool, Query(description="leave out environment, launch and notes (for tables)")] = False,
    ) -> Response:
        """Runs, filtered and sorted, one page at a time (pass ``next_cursor`` back as ``cursor``)."""
        import orjson

        scope = principal_of(request).project
        if scope is not None:
            if project not in (None, scope):
                return Response(b'{"items":[],"next_cursor":null}', media_type="application/json")
            project = scope
        page = store.list_runs(RunQuery(project=project, labels=label, status=status, kinds=kind, sort=sort,
                                        descending=order == "desc", limit=limit, cursor=cursor))
        items = [run_view(request, r, compact) for r in page.items]
        return Response(orjson.dumps({"items": items, "next_cursor": page.next_cursor}),
                        media_type="application/json")

    @app.get(f"{v1}/runs/{{ref}}", tags=["runs"])
    @requires("reader")
    def get_run(request: Request, ref: str) -> dict[str, Any]:
        """One run, by number, name or a unique prefix of its id."""
        return run_view(request, server.run_for(request, ref))

    @app.get(f"{v1}/runs/{{ref}}/children", tags=["lineage"])
    @requires("reader")
    def children(request: Request, ref: str) -> list[dict[str, Any]]:
        """Runs launched as reruns of this one."""
        run = server.run_for(request, ref)
        return [run_view(request, r) for r in store.children_of(run.number)]

    @app.get(f"{v1}/runs/{{ref}}/inputs", tags=["lineage"])
    @requires("reader")
    def inputs(request: Request, ref: str) -> list[dict[str, Any]]:
        """What the run read: artifacts of other runs, datasets and paths, by content hash."""
        run = server.run_for(request, ref)
        return [wire.plain_out(i) for i in store.inputs_of(run.number)]

    @app.patch(f"{v1}/runs/{{ref}}", tags=["runs"])
    @requires("writer")
    def patch_run(request: Request, ref: str, change: RunChange) -> dict[str, Any]:
        """Rename a run, change its labels, replace or extend its notes."""
        from runyard.names import validate_run_name
        from runyard.store.api import RunPatch

        run = server.run_for(request, ref)
        if change.name is not None:
            validate_run_name(change.name)
        if change.name is not None or change.notes is not None:
            run = store.update_run(run.number, RunPatch(name=change.name, notes=change.notes))
        if change.add_labels or change.remove_labels:
            run = store.set_labels(run.number, change.add_labels, change.remove_labels)
        if change.append_note:
            run = store.append_note(run.number, change.append_note)
        server.hub.publish(run.number, run.project)
        return run_view(request, run)

    @app.get(f"{v1}/runs/{{ref}}/diff", tags=["runs"])
    @requires("reader")
    def diff(request: Request, ref: str) -> Response:
        """The uncommitted changes the run's code had against its git commit, as a unified diff."""
        run = server.run_for(request, ref)
        if not run.git_diff_ref:
            raise NotFound(f"run {run.number} recorded no uncommitted changes")
        return Response(server.artifacts.read_bytes(run.git_diff_ref), media_type="text/plain; charset=utf-8")


def run_view(request: Request, run: Any, compact: bool = False) -> dict[str, Any]:
    """A run as this caller may see it: credentials masked for everyone (``wire.masked``), and a
    reader does not see the values of ``--env`` (they often hold secrets), only their names.
    ``compact`` leaves out environment, launch and notes (before masking: nothing left to mask)."""
    data = wire.run_out(run)
    if compact:
        data["environment"], data["launch"], data["notes"] = {}, None, ""
    data = wire.masked(data)
    if principal_of(request).role == "reader":
        wire.hide_env(data)
    return data
