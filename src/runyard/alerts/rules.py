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

from runyard.errors import ConfigError

#: Each kind of rule and the keys it needs beyond name and when.
KINDS: dict[str, tuple[str, ...]] = {
    "nan": (), "above": ("metric", "value"), "below": ("metric", "value"), "drop": ("metric", "by"),
    "plateau": ("metric", "steps"), "stalled": ("for",), "gpu_idle": ("value", "for"), "memory": ("value",),
    "failed": (), "finished": (), "lost": (),
}
#: Kinds about a run's state rather than its metrics.
STATE_KINDS = frozenset({"failed", "finished", "lost"})
CHANNELS = frozenset({"inbox", "webhook", "email", "desktop"})
ACTIONS = frozenset({"notify", "stop"})
KEYS = frozenset({"name", "when", "metric", "action", "notify", "value", "by", "steps", "epsilon", "for", "mode",
                  "cooldown"})
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def seconds(text: Any, what: str) -> float:
    """``"10m"`` -> 600.0; a bare number is seconds."""
    if isinstance(text, int | float) and not isinstance(text, bool) and text > 0:
        return float(text)
    m = _DURATION.match(str(text))
    if not m or float(m.group(1)) <= 0:
        raise ValueError(f"{what} must be a duration such as 30s, 10m or 2h, not {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def amount(text: Any) -> tuple[float, bool]:
    """``"10%"`` -> (0.1, True); ``0.5`` -> (0.5, False)."""
    if isinstance(text, str) and text.strip().endswith("%"):
        return _number(text.strip()[:-1], "by") / 100.0, True
    return _number(text, "by"), False


def _number(value: Any, key: str) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{key} must be a number, not {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{key} must be a number, not {value!r}") from None


def check(data: Mapping[str, Any], where: str, project: str | None = None, run: int | None = None) -> Any:
    """One rule, checked: a ``store.api.AlertRule``; ``where`` names its origin in error messages."""
    from runyard.store.api import AlertRule

    try:
        return AlertRule(**_fields(data), project=project, run=run, source=where)
    except ValueError as e:
        raise ConfigError(f"{where}: {e}") from None


def _fields(data: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(data) - KEYS)
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r} (known: {', '.join(sorted(KEYS))})")
    name, when = data.get("name"), data.get("when")
    if not isinstance(name, str) or not name.strip() or len(name) > 100:
        raise ValueError("every rule needs a name (a string of 1 to 100 characters)")
    if when not in KINDS:
        raise ValueError(f"rule {name!r}: when must be one of {', '.join(KINDS)}, not {when!r}")
    missing = [k for k in KINDS[when] if k not in data]
    if missing:
        raise ValueError(f"rule {name!r}: when = {when!r} needs {' and '.join(missing)}")
    spec: dict[str, Any] = {}
    if "metric" in data:
        if not isinstance(data["metric"], str) or not data["metric"]:
            raise ValueError(f"rule {name!r}: metric must be a metric name")
        spec["metric"] = data["metric"]
    if "value" in data:
        spec["value"] = _number(data["value"], "value")
    if "by" in data:
        size, percent = amount(data["by"])
        if size <= 0:
            raise ValueError(f"rule {name!r}: by must be above 0, not {data['by']!r}")
        spec["by"], spec["percent"] = size, percent
    if "steps" in data:
        steps = data["steps"]
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
            raise ValueError(f"rule {name!r}: steps must be a whole number above 0, not {steps!r}")
        spec["steps"] = steps
    if "epsilon" in data:
        spec["epsilon"] = abs(_number(data["epsilon"], "epsilon"))
    if "for" in data:
        spec["for"] = seconds(data["for"], f"rule {name!r}: for")
    spec["cooldown"] = seconds(data.get("cooldown", "1h"), f"rule {name!r}: cooldown")
    if "mode" in data:
        if data["mode"] not in ("min", "max"):
            raise ValueError(f"rule {name!r}: mode must be min or max, not {data['mode']!r}")
        spec["mode"] = data["mode"]
    action = data.get("action", "notify")
    if action not in ACTIONS:
        raise ValueError(f"rule {name!r}: action must be notify or stop, not {action!r}")
    notify = data.get("notify", ["inbox"])
    if isinstance(notify, str):
        notify = [notify]
    if not isinstance(notify, list) or not notify or any(c not in CHANNELS for c in notify):
        raise ValueError(f"rule {name!r}: notify must list channels among {', '.join(sorted(CHANNELS))}, "
                         f"not {data.get('notify')!r}")
    return {"name": name.strip(), "kind": when, "spec": spec, "action": action, "notify": tuple(notify)}


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
