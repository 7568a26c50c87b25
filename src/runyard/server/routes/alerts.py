"""Alerts: those fired (the inbox, marked seen), the rules kept on the server, and the counts
`runyard status` prints. A project token sees and changes only what concerns its project."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request
from pydantic import BaseModel, Field

from runyard import wire
from runyard.errors import AccessDenied, NotFound
from runyard.server.security import requires
from runyard.server.state import Server, principal_of
from runyard.types import RECENT_FAILURES


class AlertIds(BaseModel):
    ids: list[Annotated[int, Field(ge=1, le=2**62)]] = Field(max_length=10_000,
                                                             description="Alert event ids to mark seen")


class NewAlertRule(BaseModel):
    """A rule as `runyard alert add` sends it: the keys of a runyard.toml ``[[alerts]]`` table."""

    rule: dict[str, Any] = Field(description="name, when, metric, value, by, steps, epsilon, for, mode, "
                                             "cooldown, action, notify (see `runyard alert add --help`)")
    project: str | None = Field(None, max_length=100, description="Only this project's runs")
    run: str | None = Field(None, max_length=200, description="Only this run (number, name or id prefix)")


def add_routes(app: FastAPI, server: Server) -> None:
    store = server.store
    v1 = wire.API_PREFIX

    @app.get(f"{v1}/alerts", tags=["alerts"])
    @requires("reader")
    def alerts(request: Request, run: Annotated[str | None, Query(max_length=200)] = None, unseen: bool = False,
               limit: Annotated[int, Query(ge=1, le=1000)] = 200) -> list[dict[str, Any]]:
        """Fired alerts, oldest first (the last ``limit``); ``unseen`` only those nobody has marked seen."""
        number = server.run_for(request, run).number if run is not None else None
        events = store.list_alert_events(number, unseen_only=unseen)[-limit:]
        scope = principal_of(request).project
        if scope is not None:
            visible = {n for n in {e.run for e in events} if store.get_run(n).project == scope}
            events = [e for e in events if e.run in visible]
        out = []
        for e in events:
            item = wire.plain_out(e)
            item.pop("delivery", None)  # channel details stay on the server
            out.append(item)
        return out

    @app.post(f"{v1}/alerts/seen", tags=["alerts"])
    @requires("writer")
    def alerts_seen(request: Request, body: AlertIds) -> dict[str, int]:
        """Mark alerts seen: they stop drawing attention (the header chip, `runyard status`)."""
        ids = body.ids
        scope = principal_of(request).project
        if scope is not None:
            mine = {e.id for e in store.list_alert_events(unseen_only=True)
                    if store.get_run(e.run).project == scope}
            ids = [i for i in ids if i in mine]
        store.mark_alerts_seen(ids)
        return {"marked": len(ids)}

    def rule_visible(request: Request, rule: Any) -> bool:
        """A project token sees rules for every run, for its project and for its project's runs."""
        scope = principal_of(request).project
        if scope is None or rule.project == scope:
            return True
        if rule.project is not None:
            return False
        return rule.run is None or store.get_run(rule.run).project == scope

    @app.get(f"{v1}/alert-rules", tags=["alerts"])
    @requires("reader")
    def alert_rules(request: Request,
                    project: Annotated[str | None, Query(max_length=100)] = None) -> list[dict[str, Any]]:
        """Alert rules kept on the server (from `runyard alert add` and run.alert()), oldest first."""
        rules = [r for r in store.list_alert_rules(project) if rule_visible(request, r)]
        return [wire.plain_out(r) for r in rules]

    @app.post(f"{v1}/alert-rules", tags=["alerts"], status_code=201)
    @requires("writer")
    def add_alert_rule(request: Request, body: NewAlertRule) -> dict[str, Any]:
        """Add a rule; a malformed one is refused (400) with what is wrong."""
        from runyard.alerts.rules import check

        scope = principal_of(request).project
        number = server.run_for(request, body.run).number if body.run is not None else None
        project = body.project
        if scope is not None:
            if project not in (None, scope):
                raise AccessDenied(f"this token is limited to project {scope}")
            if number is None:
                project = scope  # a limited token's rule covers its own project, not every run
        rule = store.add_alert_rule(check(body.rule, "runyard alert add", project, number))
        return wire.plain_out(rule)

    @app.delete(f"{v1}/alert-rules/{{rule_id}}", tags=["alerts"])
    @requires("writer")
    def remove_alert_rule(request: Request, rule_id: int) -> dict[str, Any]:
        """Remove a rule; the alerts it raised stay in the inbox."""
        rule = next((r for r in store.list_alert_rules() if r.id == rule_id), None)
        if rule is None or not rule_visible(request, rule):
            raise NotFound(f"no alert rule {rule_id}")
        if principal_of(request).project is not None and rule.project is None and rule.run is None:
            # A limited token reads the rules for every run, but does not remove them for everyone.
            raise AccessDenied(f"alert rule {rule_id} covers every project: removing it needs a token without "
                               "--project")
        if not store.remove_alert_rule(rule_id):
            raise NotFound(f"no alert rule {rule_id}")
        return {"removed": rule_id}

    @app.get(f"{v1}/status", tags=["alerts"])
    @requires("reader")
    def status(request: Request, since: Annotated[float | None, Query(ge=0)] = None) -> dict[str, int]:
        """What `runyard status` prints: runs running and queued, runs failed since ``since`` (default:
        the last 24 hours), unseen alerts."""
        since = time.time() - RECENT_FAILURES if since is None else since
        return store.status_counts(since, principal_of(request).project)
