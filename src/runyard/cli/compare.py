"""``runyard compare``: runs side by side, as the dashboard's Compare page shows them.

Params are the runs' configs, nested keys flattened with dots; only those whose values differ are
shown unless ``--all``. Summary metrics (the last value of each metric, or what the script set) are
all shown. The comparison is made here from the runs as the store (or server) returns them: the
dashboard also compares in the client, and there is no compare route to reuse.
"""

from __future__ import annotations

from typing import Any

from runyard.cli import columns as cols
from runyard.errors import InvalidArgument


def _same(value: Any) -> str:
    """What equality of two params means here: 1 and 1.0 are equal, NaN equals NaN, 0.10001 is not 0.1."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return repr(float(value))
    return repr(value)


def _texts(cells: list[Any]) -> list[str]:
    """A row's cells as text: numbers to four significant digits, unless that shows two values that
    differ alike (a learning rate of 0.1 against 0.10001): then the row's numbers in full."""
    texts = [cols.text(c) for c in cells]
    if len(set(texts)) < len({_same(c) for c in cells}):
        texts = [repr(c) if isinstance(c, float) else cols.text(c) for c in cells]
    return texts


def _rows(values: list[dict[str, Any]], only_differing: bool) -> dict[str, list[Any]]:
    keys = sorted({k for v in values for k in v})
    rows = {}
    for key in keys:
        cells = [v.get(key) for v in values]
        # a key one run lacks differs from the others even when they hold None
        if only_differing and len({(key in v, _same(v.get(key))) for v in values}) <= 1:
            continue
        rows[key] = cells
    return rows


def run(refs: list[str], show_all: bool, as_json: bool) -> int:
    from runyard.cli.runs import _open, _print_json, _table

    if len(refs) < 2:
        raise InvalidArgument("compare takes two runs or more, e.g. runyard compare 2 3 4")
    api = _open()
    try:
        runs = [api.store.get_run(ref) for ref in refs]  # every reference checked before anything prints
    finally:
        api.close()
    params = _rows([cols.flatten(r.config or {}) for r in runs], only_differing=not show_all)
    summary = _rows([dict(r.summary or {}) for r in runs], only_differing=False)
    if as_json:
        _print_json({"runs": [{"number": r.number, "name": r.name, "status": r.status.value} for r in runs],
                     "params": params, "summary": summary})
        return 0
    headers = ["", *(f"run {r.number}" + (f" ({r.name})" if r.name else "") for r in runs)]
    table: list[list[str]] = [[f"params ({'all' if show_all else 'differing'})", *[""] * len(runs)]]
    if params:
        table += [[f"  {key}", *_texts(cells)] for key, cells in params.items()]
    else:
        table.append(["  (none differ)" if not show_all else "  (none)", *[""] * len(runs)])
    table.append(["summary", *[""] * len(runs)])
    if summary:
        table += [[f"  {key}", *_texts(cells)] for key, cells in summary.items()]
    else:
        table.append(["  (none)", *[""] * len(runs)])
    print(_table(headers, table))
    return 0
