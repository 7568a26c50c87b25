"""Alert rules: what they may say, and their checking, wherever they come from.

A rule comes from a project's ``runyard.toml`` (``[[alerts]]`` tables), from the CLI
(``runyard alert add``) or from the SDK (``run.alert(...)``), always as a mapping of the file's keys::

    name = "loss-nan"     when = "nan"     metric = "loss"     action = "stop"     notify = ["inbox"]
    value = 0.5 (above, below, memory)   by = "10%" or 0.1 (drop)   steps = 500, epsilon = 1e-4 (plateau)
    for = "10m" (stalled, gpu_idle)      mode = "min" | "max" (plateau: which way is better)

``check`` turns one into a ``store.api.AlertRule`` or raises ``ConfigError`` saying where and what
is wrong: a malformed rule is refused when it is submitted, never ignored later.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from runyard.alerts.spec import validate
from runyard.errors import ConfigError


def check(data: Mapping[str, Any], where: str, project: str | None = None, run: int | None = None) -> Any:
    """One rule, checked: a ``store.api.AlertRule``; ``where`` names its origin in error messages."""
    from runyard.store.api import AlertRule

    try:
        return AlertRule(**validate(data), project=project, run=run, source=where)
    except ValueError as e:
        raise ConfigError(f"{where}: {e}") from None


def load_file(path: Path, project: str | None = None) -> list[Any]:
    """Every ``[[alerts]]`` rule of a TOML file, checked; errors name the file and the rule's line."""
    text = path.read_text(encoding="utf-8")
    data = _toml(path, text)
    tables = data.get("alerts", [])
    if not isinstance(tables, list):
        raise ConfigError(f"{path}: alerts must be written as [[alerts]] tables")
    lines = _table_lines(text)
    return [check(table, f"{path}:{lines[i] if i < len(lines) else 1}", project) for i, table in enumerate(tables)]


def _toml(path: Path, text: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None


def load_notify(path: Path) -> dict[str, Any] | None:
    """The ``[notify]`` table of a TOML file, checked (see alerts/dispatch.py), or None."""
    from runyard.alerts.dispatch import NotifySettings

    table = _toml(path, path.read_text(encoding="utf-8")).get("notify")
    if table is None:
        return None
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: notify must be a table: [notify]")
    NotifySettings.from_table(table, str(path))
    return table


def _table_lines(text: str) -> Sequence[int]:
    """The line number of each ``[[alerts]]`` header, in order."""
    return [n for n, line in enumerate(text.splitlines(), start=1) if re.match(r"^\s*\[\[\s*alerts\s*\]\]", line)]


def travelling(rule: Any) -> dict[str, Any]:
    """A checked rule as plain values, to travel in a run's launch options (see ``arrived``)."""
    return {"name": rule.name, "kind": rule.kind, "spec": dict(rule.spec), "action": rule.action,
            "notify": list(rule.notify), "source": rule.source}


def arrived(data: Any, run: int, index: int) -> Any:
    """The rule ``travelling`` made, for run ``run``: its id is negative, as it is in no table."""
    from runyard.store.api import AlertRule

    return AlertRule(str(data["name"]), str(data["kind"]), dict(data["spec"]), data.get("action", "notify"),
                     tuple(data.get("notify", ("inbox",))), None, run, True, data.get("source"),
                     -(run * 1000 + index + 1))
