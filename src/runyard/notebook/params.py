"""A notebook's parameters: read at submission, checked against ``-p`` values, parsed for injection.

papermill's conventions: the parameters are the names the cell tagged ``parameters`` assigns; values
given for the run are injected in a new cell after it (tagged ``injected-parameters``), or at the
top when no cell is tagged, with a warning. Unlike papermill, which only warns, a value for a name
the ``parameters`` cell does not assign is refused before anything is queued (nteract/papermill#818:
a typo otherwise runs the notebook with its defaults, silently).

Reading uses nbformat and :mod:`ast` only (no kernel, no papermill), so ``runyard run`` stays quick.
"""

from __future__ import annotations

import ast
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


def load(path: Path) -> Any:
    """The notebook at ``path`` as an nbformat v4 node; InvalidArgument (one line) if it is not one."""
    import nbformat

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidArgument(f"{path}: no such notebook") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidArgument(f"{path}: cannot read it ({getattr(e, 'strerror', None) or e})") from None
    try:
        nb = nbformat.reads(text, as_version=4)  # type: ignore[no-untyped-call]
        nbformat.validate(nb)
    except Exception as e:  # noqa: BLE001 - nbformat raises JSON, validation and version errors alike
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InvalidArgument(f"{path}: not a valid Jupyter notebook ({first})") from None
    return nb


def declared(nb: Any) -> Declared:
    """The names assigned at the top level of the first cell tagged ``parameters``."""
    for cell in nb.cells:
        if cell.get("cell_type") != "code" or PARAMETERS_TAG not in cell.get("metadata", {}).get("tags", []):
            continue
        # IPython lines (%magic, !shell) are not Python: they assign nothing, so they are left out.
        source = "\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!")))
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


def check(path: str, nb: Any, given: Mapping[str, str]) -> tuple[str, ...]:
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
