"""What a handler's ``predict`` may declare: ``Input(...)`` as a parameter's default, and the types
runyard knows beyond Python's own (float, int, str, bool, list[float], dict)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


#: The default of an input the request must give.
REQUIRED: Any = _Required()


class Image:
    """An image input or output. As an input the handler gets a numpy ``uint8`` array, ``(height,
    width)`` for mode ``"L"`` or ``(height, width, 3)`` for ``"RGB"``, resized to the declared size;
    as an output it may return such an array."""


class Table:
    """A table. As an input the handler gets its rows as a list of dicts (``pandas.DataFrame(rows)``
    makes a frame of them); as an output it may return a list of dicts or a DataFrame."""


class Scores:
    """An output of class scores, ``{label: score}`` (or a list of scores, labelled 0, 1, ...): the
    demo page draws them as a bar chart."""


@dataclass(frozen=True)
class Input:
    """How one input of ``predict`` is checked and shown, as the parameter's default value."""

    default: Any = REQUIRED
    description: str = ""
    #: Bounds of a number, or of each number of a list.
    ge: float | None = None
    le: float | None = None
    #: The values a number or a text may take (a drop-down on the demo page).
    choices: Sequence[Any] | None = None
    #: The longest text, or list of numbers.
    max_length: int | None = None
    #: An image is resized to this size (pixels), and converted to this mode ("L": grey, "RGB").
    width: int | None = None
    height: int | None = None
    mode: str | None = None
    #: The columns of a table input (the demo page's editable table starts with them).
    columns: Sequence[str] | None = None
