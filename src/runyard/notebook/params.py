"""A notebook's parameters: read at submission, checked against ``-p`` values, parsed for injection.

papermill's conventions: the parameters are the names the cell tagged ``parameters`` assigns; values
given for the run are injected in a new cell after it (tagged ``injected-parameters``), or at the
top when no cell is tagged, with a warning. Unlike papermill, which only warns, a value for a name
the ``parameters`` cell does not assign is refused before anything is queued (nteract/papermill#818:
a typo otherwise runs the notebook with its defaults, silently).

Reading uses :mod:`json` and :mod:`ast` only (no kernel, no nbformat, no papermill), so ``runyard
run`` stays quick.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runyard.errors import InvalidArgument

#: The tag of the cell whose assignments are the notebook's parameters (papermill's).
PARAMETERS_TAG = "parameters"


@dataclass(frozen=True)
class Declared:
    """What a notebook declares: the names its ``parameters`` cell assigns, in order (empty and
    ``tagged`` False when no cell is tagged ``parameters``)."""

    names: tuple[str, ...]
    tagged: bool


def load(path: Path) -> dict[str, Any]:
    """The notebook at ``path``, as its JSON; InvalidArgument (one line) if it is not an nbformat 4
    notebook. Checked by hand, not by nbformat: importing nbformat's validator (jsonschema) takes
    over a second, which every ``runyard run`` of a notebook would wait for; the executor loads it
    with nbformat (through papermill), which checks the rest."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidArgument(f"{path}: no such notebook") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidArgument(f"{path}: cannot read it ({getattr(e, 'strerror', None) or e})") from None
    try:
        nb = json.loads(text)
    except ValueError as e:
        raise InvalidArgument(f"{path}: not a valid Jupyter notebook (not JSON: {e})") from None
    if not isinstance(nb, dict) or "nbformat" not in nb:
        raise InvalidArgument(f"{path}: not a valid Jupyter notebook (no nbformat version)")
    if nb["nbformat"] != 4:
        raise InvalidArgument(f"{path}: not a valid Jupyter notebook (nbformat {nb['nbformat']!r}; runyard runs "
                              "nbformat 4 notebooks: open it in Jupyter and save it to upgrade it)")
    cells = nb.get("cells")
    if not isinstance(cells, list):
        raise InvalidArgument(f"{path}: not a valid Jupyter notebook (its 'cells' is not a list)")
    for number, cell in enumerate(cells, 1):
        source = cell.get("source") if isinstance(cell, dict) else None
        if not isinstance(cell, dict) or cell.get("cell_type") not in ("code", "markdown", "raw") or not (
                isinstance(source, str) or (isinstance(source, list) and all(isinstance(x, str) for x in source))):
            raise InvalidArgument(f"{path}: not a valid Jupyter notebook (cell {number} is not a code, markdown "
                                  "or raw cell with a source)")
    return nb


def _source(cell: Mapping[str, Any]) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else str(source)


def declared(nb: Mapping[str, Any]) -> Declared:
    """The names assigned at the top level of the first cell tagged ``parameters``."""
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code" or PARAMETERS_TAG not in (cell.get("metadata") or {}).get("tags", []):
            continue
        # IPython lines (%magic, !shell) are not Python: they assign nothing, so they are left out.
        source = "\n".join(line for line in _source(cell).splitlines()
                           if not line.lstrip().startswith(("%", "!")))
        try:
            tree = ast.parse(source)
        except SyntaxError as e:
            raise InvalidArgument(f"the cell tagged '{PARAMETERS_TAG}' is not valid Python (line {e.lineno}: "
                                  f"{e.msg})") from None
        names: list[str] = []
        for node in tree.body:
            targets = node.targets if isinstance(node, ast.Assign) else \
                [node.target] if isinstance(node, ast.AnnAssign) else []
            for target in targets:
                for name in ast.walk(target):
                    if isinstance(name, ast.Name) and name.id not in names:
                        names.append(name.id)
        return Declared(tuple(names), True)
    return Declared((), False)


def check(path: str, nb: Mapping[str, Any], given: Mapping[str, str]) -> tuple[str, ...]:
    """Refuse values for names the notebook does not declare; the warnings to give otherwise."""
    found = declared(nb)
    if not found.tagged:
        if not given:
            return ()
        return (f"{path} has no cell tagged '{PARAMETERS_TAG}': the parameters are set in a cell at the top, "
                "before the notebook's own code (which may then overwrite them); tag the cell that sets the "
                "defaults 'parameters' to have them checked and set after it",)
    unknown = sorted(set(given) - set(found.names))
    if unknown:
        known = ", ".join(found.names) or "none (the cell assigns nothing)"
        raise InvalidArgument(f"{path}: no parameter {', '.join(unknown)} in its '{PARAMETERS_TAG}' cell; "
                              f"its parameters: {known}")
    return ()


def value_of(text: str) -> Any:
    """A ``-p`` value as the notebook gets it: a Python literal when it is one (numbers, True/False,
    None, lists, dicts, quoted strings), else the run's config's reading of it (true/false are
    booleans), else the text itself."""
    from runyard.exec.options import param_value

    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return param_value(text)
    # Sets, bytes and complex numbers are literals too, but no run's config (JSON) holds them.
    return value if _plain(value) else text


def _plain(value: Any) -> bool:
    if value is None or isinstance(value, bool | int | float | str):
        return True
    if isinstance(value, list | tuple):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return False


def values_of(params: Mapping[str, str]) -> dict[str, Any]:
    """Every ``-p`` value parsed by :func:`value_of`."""
    return {key: value_of(text) for key, text in params.items()}
