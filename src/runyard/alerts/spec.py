"""What an alert rule may say, checked with no store at hand (the SDK checks ``run.alert`` with it).

A rule is a mapping of the keys of a ``runyard.toml`` ``[[alerts]]`` table; ``validate`` returns its
fields (name, kind, spec, action, notify) or raises ``ValueError`` saying what is wrong. The store's
form of a rule, and the files, are alerts/rules.py.
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Mapping
from typing import Any

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


def validate(data: Mapping[str, Any]) -> dict[str, Any]:
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
        if not isinstance(steps, numbers.Integral) or isinstance(steps, bool) or steps < 1:
            raise ValueError(f"rule {name!r}: steps must be a whole number above 0, not {steps!r}")
        spec["steps"] = int(steps)  # a numpy integer from a script, kept as a plain one
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
    if not isinstance(notify, list | tuple) or not notify or any(c not in CHANNELS for c in notify):
        raise ValueError(f"rule {name!r}: notify must list channels among {', '.join(sorted(CHANNELS))}, "
                         f"not {data.get('notify')!r}")
    return {"name": name.strip(), "kind": when, "spec": spec, "action": action, "notify": tuple(notify)}


def file_form(name: str, kind: str, spec: Mapping[str, Any], action: str, notify: Any) -> dict[str, Any]:
    """A checked rule back in the file's keys (``validate`` of the result gives the rule again):
    how a rule travels to a server, which checks it once more."""
    data: dict[str, Any] = {"name": name, "when": kind, "action": action, "notify": list(notify)}
    for key in ("metric", "value", "steps", "epsilon", "for", "cooldown", "mode"):
        if key in spec:
            data[key] = spec[key]
    if "by" in spec:
        data["by"] = f"{spec['by'] * 100:.12g}%" if spec.get("percent") else spec["by"]
    return data
