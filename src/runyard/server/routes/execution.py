"""Runs the server executes: launch one from an uploaded code snapshot, stop, rerun; and mark one
lost (sent by shippers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from pydantic import BaseModel, Field

from runyard import wire
from runyard.errors import AccessDenied, InvalidArgument
from runyard.exec import options
from runyard.server.routes.runs import run_view
from runyard.server.security import requires
from runyard.server.state import Server, principal_of
from runyard.types import RunKind


class Launch(BaseModel):
    """A run to queue on the server's machine, as `runyard run` sends it (see exec/remote_launch.py)."""

    command: list[str] = Field(min_length=1, max_length=10_000)
    shell: bool = False
    snapshot: str = Field(pattern="^sha256:[0-9a-f]{64}$", description="Content reference of the snapshot manifest")
    git_commit: str | None = Field(None, max_length=100)
    git_branch: str | None = Field(None, max_length=300)
    git_diff_ref: str | None = Field(None, pattern="^sha256:[0-9a-f]{64}$")
    project: str | None = Field(None, max_length=100)
    name: str | None = Field(None, max_length=100)
    labels: list[str] = Field(default_factory=list, max_length=100)
    note: str = Field("", max_length=1_000_000)
    params: dict[str, str] = Field(default_factory=dict)
    pip: list[str] = Field(default_factory=list, max_length=1000)
    requirements: str | None = Field(None, max_length=1_000_000)
    mounts: list[str] = Field(default_factory=list, max_length=100)
    env: dict[str, str] = Field(default_factory=dict)
    gpus: int | None = Field(None, ge=0, le=4096)
    cpus: int | None = Field(None, ge=0, le=4096)
    memory: str | None = Field(None, max_length=30)
    timeout: str | None = Field(None, max_length=30)
    priority: int | None = Field(None, ge=-1_000_000, le=1_000_000,
                                 description="Higher starts first; default: the machine profile's, else 0")
    machine: str | None = Field(None, max_length=100)
    executor: str | None = Field(None, max_length=32, description="Where the run executes (runyard run --on); "
                                 "default: the server's executor setting")
    kind: RunKind = Field(RunKind.SCRIPT, description="What the run executes: a command (script), a notebook "
                          "of the snapshot, whose command is then python -m runyard.notebook.execute NOTEBOOK, or "
                          "JupyterLab (jupyterlab), whose command is python -m runyard.notebook.labrun")


class Rerun(BaseModel):
    params: dict[str, str] = Field(default_factory=dict, description="Params to change, as for --param KEY=VALUE")
    name: str | None = Field(None, max_length=100)
    pip: list[str] = Field(default_factory=list, max_length=1000, description="Packages replacing the parent's")
    env: dict[str, str] = Field(default_factory=dict, description="Variables set over the parent's --env")
    timeout: str | None = Field(None, max_length=30)
    mounts: list[str] = Field(default_factory=list, max_length=100, description="RUN:PATH:TARGET artifact mounts")
    gpus: int | None = Field(None, ge=0, le=4096)


class Lost(BaseModel):
    message: str = Field(max_length=2000)


def add_routes(app: FastAPI, server: Server) -> None:
    store = server.store
    v1 = wire.API_PREFIX

    @app.post(f"{v1}/runs", tags=["execution"])
    @requires("writer")
    def launch(request: Request, body: Launch) -> dict[str, Any]:
        """Queue a run on the server's machine from an uploaded code snapshot (what `runyard run` does
        with RUNYARD_SERVER set). Answers 409 with the missing blobs when the snapshot is incomplete."""
        from runyard.exec import options
        from runyard.exec.remote_launch import queue
        from runyard.exec.submit import Submission

        may_launch(request)
        fields = body.model_dump()
        if body.kind is RunKind.JUPYTERLAB:
            fields["command"], fields["executor"] = lab_launch(body)
        snapshot = (fields.pop("snapshot"), fields.pop("git_commit"), fields.pop("git_branch"),
                    fields.pop("git_diff_ref"))
        requirements = fields.pop("requirements")
        fields["priority"] = options.priority(fields["priority"], fields["machine"], server.settings.machines)
        done = queue(server.settings, server.artifacts, Submission(cwd=Path(), snapshot=snapshot, **fields),
                     requirements)
        run = store.get_run(done.number)
        server.hub.publish(run.number, run.project)
        return {"number": done.number, "id": done.run_id, "status": run.status.value}

    @app.post(f"{v1}/runs/{{ref}}/stop", tags=["execution"])
    @requires("writer")
    def stop(request: Request, ref: str) -> dict[str, Any]:
        """Stop a queued or running run (SIGTERM to its supervisor, SIGKILL after the grace period)."""
        from runyard.exec.control import stop_run

        run = server.run_for(request, ref)
        message = stop_run(store, server.settings, run)
        server.hub.publish(run.number, run.project)
        return {"message": message, "run": run_view(request, store.get_run(run.number))}

    @app.post(f"{v1}/runs/{{ref}}/rerun", tags=["execution"])
    @requires("writer")
    def rerun(request: Request, ref: str, body: Rerun | None = None) -> dict[str, Any]:
        """Queue the run's launch again with the same code snapshot, optionally with changed params (only
        ones it has), packages, variables, timeout, artifact mounts or GPUs."""
        from runyard.exec.control import Overrides
        from runyard.exec.control import rerun as queue_again
        from runyard.exec.remote_launch import artifact_mounts_only

        may_launch(request)
        body = body or Rerun(name=None, timeout=None, gpus=None)
        parent = server.run_for(request, ref)
        for key, value in body.params.items():
            options.key_value(f"{key}={value}", "--param")
        for key, value in body.env.items():
            options.key_value(f"{key}={value}", "--env")
        artifact_mounts_only(body.mounts)
        overrides = Overrides(body.pip, body.env, body.timeout, body.mounts, body.gpus)
        number = queue_again(server.settings, parent, body.params, body.name, server.settings.home, overrides)
        return {"number": number, "run": run_view(request, store.get_run(number))}

    @app.post(f"{v1}/runs/{{ref}}/lost", tags=["ingest"])
    @requires("writer")
    def lost(request: Request, ref: str, body: Lost) -> dict[str, Any]:
        """Mark a run lost: its process died without saying how it ended (sent by shippers)."""
        run = server.run_for(request, ref)
        changed = store.mark_lost(run.id, body.message)
        if changed:
            server.watcher.after_status(run.number, "lost", body.message)
        server.hub.publish(run.number, run.project)
        return {"changed": changed}


def lab_launch(body: Launch) -> tuple[list[str], str]:
    """A JupyterLab run's command and executor. On this machine (the default, whatever the server's
    executor setting): ``runyard.notebook.labrun`` in the server's own Python, where runyard and
    JupyterLab are installed, whichever Python the client named. On a Ray node: the node's ``python``,
    as for a script; its supervisor tells the lab origin where JupyterLab answers (``exec/node.py``)."""
    import importlib.util
    import sys

    from runyard.exec.submit import LAB_COMMAND

    if body.shell or body.command[1:] != list(LAB_COMMAND):
        raise InvalidArgument("a jupyterlab run's command is python -m runyard.notebook.labrun: start one with "
                              "runyard notebook")
    if body.executor == "ray":
        return ["python", *LAB_COMMAND], "ray"
    if body.executor not in (None, "local"):
        raise InvalidArgument(f"a jupyterlab run executes on the server's machine (--on local) or a Ray node "
                              f"(--on ray), not {body.executor}")
    if importlib.util.find_spec("jupyterlab") is None:
        raise InvalidArgument("JupyterLab is not installed on the server's machine: pip install 'runyard[notebook]' "
                              f"into {sys.executable} there")
    return [sys.executable, *LAB_COMMAND], "local"


def may_launch(request: Request, what: str = "launching") -> None:
    """A launched run executes as the server's user, with access to all it can reach: a token
    limited to one project would not stay limited, so only unlimited writers launch (or open a
    JupyterLab, which runs code as well)."""
    scope = principal_of(request).project
    if scope is not None:
        raise AccessDenied(f"this token is limited to project {scope}, and a launched run could reach every "
                           f"project on the server machine: {what} needs a token without --project")
