"""Values of a run named by a column: ``config.lr``, ``summary.val/acc``, or a field such as ``exit_code``.

Shared by ``runyard ls --columns`` and ``runyard compare``, so both read nested configs the same way
(as the dashboard's tables do: ``config.optim.lr`` is ``{"optim": {"lr": ...}}`` or a key "optim.lr").
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

from runyard.errors import InvalidArgument

#: Shown where a run has no value for a column.
MISSING = "-"
_GROUPS = ("config", "summary")


def _fields() -> tuple[str, ...]:
    from runyard.store.api import Run

    return tuple(f.name for f in dataclasses.fields(Run) if f.name not in ("config", "summary"))


def parse(text: str) -> list[str]:
    """Columns from ``--columns a,b``, each checked: an unknown one is a usage error naming the choices."""
    columns = [c.strip() for c in text.split(",") if c.strip()]
    if not columns:
        raise InvalidArgument("--columns: name at least one column, e.g. --columns config.lr,summary.val/acc")
    fields = _fields()
    for column in columns:
        group, dot, key = column.partition(".")
        if group in _GROUPS and dot and key:
            continue
        if column in fields:
            continue
        raise InvalidArgument(f"--columns {column}: unknown column; use config.KEY, summary.KEY or one of "
                              f"{', '.join(fields)}")
    return columns


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as dotted keys: {"optim": {"lr": 1}} -> {"optim.lr": 1}."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def value_of(run: Any, column: str) -> Any:
    """The run's value for ``column``, or None when it has none."""
    group, dot, key = column.partition(".")
    if group in _GROUPS and dot:
        values = getattr(run, group) or {}
        if key in values:
            return values[key]
        return flatten(values).get(key)
    value = getattr(run, column, None)
    if column in ("launch", "command", "environment"):
        from runyard import redact

        value = redact.run_data({column: value})[column]  # what readers see of them (runyard.redact)
    if isinstance(value, tuple):
        return list(value)
    return getattr(value, "value", value)  # a status enum as its word


def text(value: Any) -> str:
    """A cell: numbers to four significant digits, nothing as "-"."""
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    if isinstance(value, Sequence) and not isinstance(value, str):
        return ",".join(map(str, value)) or MISSING
    return str(value)
