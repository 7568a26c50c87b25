"""``runyard alert add|ls|rm``, ``runyard inbox`` and ``runyard status``: on the local home, or on the
server ``RUNYARD_SERVER`` names (with ``RUNYARD_TOKEN``)."""

from __future__ import annotations

import sys
import time
from typing import Any

from runyard.cli.printable import printable
from runyard.config import resolve
from runyard.types import RECENT_FAILURES


def _api() -> Any:
    """The configured store: the local home's, or with ``RUNYARD_SERVER`` the server's (same calls)."""
    from runyard.api import Api

    return Api(catch_up=False)


def _rule_out(rule: Any) -> dict[str, Any]:
    return {"id": rule.id, "name": rule.name, "when": rule.kind, **{k: v for k, v in rule.spec.items()},
            "action": rule.action, "notify": list(rule.notify), "project": rule.project, "run": rule.run,
            "source": rule.source}


def add(fields: dict[str, Any], project: str | None, run: str | None, as_json: bool) -> int:
    from runyard.alerts.rules import check

    api = _api()
    try:
        number = api.store.resolve(run) if run is not None else None
        given = {k: v for k, v in fields.items() if v is not None}
        rule = api.store.add_alert_rule(check(given, "runyard alert add", project, number))
        print(_json(_rule_out(rule)).decode() if as_json else
              f"alert rule {rule.id} ({rule.name}) added" + (f" for run {number}" if number else
                                                           f" for project {project}" if project else " for every run"))
        return 0
    finally:
        api.close()


def ls(project: str | None, as_json: bool) -> int:
    api = _api()
    try:
        rules = [_rule_out(r) for r in api.store.list_alert_rules(project)]
    finally:
        api.close()
    if as_json:
        print(_json(rules).decode())
    elif not rules:
        print("no alert rules (add one with `runyard alert add`, or [[alerts]] in runyard.toml)")
    for r in rules if not as_json else []:
        scope = f"run {r['run']}" if r["run"] else f"project {r['project']}" if r["project"] else "every run"
        extra = " ".join(f"{k}={r[k]}" for k in ("metric", "value", "by", "steps", "for") if k in r)
        channels = ",".join(r["notify"])
        print(printable(f"{r['id']:>4}  {r['name']:<20}  {r['when']:<9} {extra:<28} {r['action']:<6} {channels:<14} "
                        f"{scope}"))
    return 0


def rm(rule_id: int) -> int:
    api = _api()
    try:
        if not api.store.remove_alert_rule(rule_id):
            print(f"runyard: no alert rule {rule_id} (see `runyard alert ls`)", file=sys.stderr)
            return 1
        print(f"alert rule {rule_id} removed")
        return 0
    finally:
        api.close()


def _event_out(e: Any) -> dict[str, Any]:
    return {"id": e.id, "run": e.run, "kind": e.kind, "message": e.message, "time": e.time, "metric": e.metric,
            "step": e.step, "value": e.value, "seen": e.seen_at is not None}


def inbox(follow: bool, as_json: bool, show_all: bool) -> int:
    """Unread alerts (oldest first), marked read once printed; ``follow`` waits for more."""
    api = _api()
    try:
        while True:
            events = api.store.list_alert_events(unseen_only=not show_all)
            for e in events:
                if as_json:
                    print(_json(_event_out(e)).decode(), flush=True)
                else:
                    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.time))
                    print(printable(f"{stamp}  run {e.run:<5} {e.kind:<9} {e.message}"), flush=True)
            api.store.mark_alerts_seen([e.id for e in events if e.seen_at is None])
            if not follow:
                if not events and not as_json:
                    print("no unread alerts")
                return 0
            time.sleep(1.0)
    except KeyboardInterrupt:
        return 0
    finally:
        api.close()


def status() -> int:
    """One line for a prompt: ``3 running · 2 queued · 1 failed · 1 alert`` (parts at zero left out).

    Kept to the standard library where it can be: sqlite3 for a local home, urllib for a server
    (SQLAlchemy or httpx would double the command's time).
    """
    settings = resolve()
    since = time.time() - RECENT_FAILURES
    if settings.server:
        from runyard.client import quick_get
        from runyard.credential import for_settings

        counts = quick_get(settings.server, for_settings(settings), "/status", {"since": since})
    else:
        from runyard.store.lite import LiteStore

        lite = LiteStore.open(settings.db)
        if lite is not None:
            try:
                counts = lite.status_counts(since)
            finally:
                lite.close()
        else:
            api = _api()
            try:
                counts = api.store.status_counts(since)
            finally:
                api.close()
    parts = [f"{counts['running']} running", f"{counts['queued']} queued"]
    if counts["failed"]:
        parts.append(f"{counts['failed']} failed")
    if counts["alerts"]:
        parts.append(f"{counts['alerts']} alert" + ("s" if counts["alerts"] > 1 else ""))
    print(" · ".join(parts))
    return 0


def _json(value: Any) -> bytes:
    import orjson  # here, not at the top: `runyard status` prints no JSON and must start fast

    from runyard.store.jsonvalues import public

    return orjson.dumps(public(value))  # a NaN alert's value as "NaN", not null


def test_channels(channels: tuple[str, ...], as_json: bool) -> int:
    """Send a test message on each channel now, as an alert from a run started here would go out."""
    from dataclasses import replace

    from runyard.alerts.dispatch import SENDERS, NotifySettings, destination
    from runyard.alerts.rules import load_notify
    from runyard.config import HOME_CONFIG_NAME

    settings = resolve()
    table, source = None, None
    for path in (settings.project_file, settings.home / HOME_CONFIG_NAME):
        if path is not None and path.is_file():
            table = load_notify(path)
            if table is not None:
                source = path
                break
    notify = NotifySettings.from_table(table, str(source)) if table is not None else NotifySettings()
    if source != settings.home / HOME_CONFIG_NAME:  # allow_private counts only in the home's config
        home_table = None
        if (settings.home / HOME_CONFIG_NAME).is_file():
            home_table = load_notify(settings.home / HOME_CONFIG_NAME)
        home = NotifySettings.from_table(home_table, str(settings.home / HOME_CONFIG_NAME)) if home_table else None
        notify = replace(notify, allow_private=home is not None and home.allow_private)
    wanted = list(channels) or [c for c in SENDERS if destination(notify, c)]
    if not wanted:
        print("runyard: no channel is configured: add a [notify] table to runyard.toml or to "
              f"{settings.home / HOME_CONFIG_NAME} (see README, Alerts)", file=sys.stderr)
        return 1
    title = "runyard: test message"
    text = f"This is a test of runyard's alert channels (settings from {source or 'defaults'})."
    results = []
    for channel in wanted:
        where = destination(notify, channel)
        try:
            if where is None:
                raise OSError(f"nothing is configured for {channel} here")
            SENDERS[channel](notify, title, [text], [])
            results.append({"channel": channel, "ok": True, "to": where})
        except Exception as e:  # noqa: BLE001 - whatever a channel raises is what the user must see
            results.append({"channel": channel, "ok": False, "error": f"{type(e).__name__}: {e}"})
    for r in results:
        if as_json:
            print(_json(r).decode())
        else:
            print(printable(f"{r['channel']}: sent to {r['to']}" if r["ok"] else
                            f"{r['channel']}: FAILED: {r['error']}"))
    return 0 if all(r["ok"] for r in results) else 1
