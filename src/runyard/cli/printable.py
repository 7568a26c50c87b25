"""Stored text made safe to print on a terminal.

Anything a run sends (its name, labels, notes, metric and config keys, status messages, log lines)
reaches the store as the run wrote it, and a terminal acts on control characters: ``\\x1b]0;...\\x07``
retitles the window, ``\\x1b[2J`` clears the screen, a carriage return or a line break in a name
forges a line of ``runyard show``. So every plain CLI output that prints stored text passes it
through ``printable``, which writes each such character as a visible escape in Python's spelling
(``\\x1b``, ``\\x07``, ``\\x9b``, ``\\u202e``): the text stays recognisable and can be searched for.

Escaped: C0 controls but the tab (and the line break where a text may hold several lines: notes,
log lines), DEL, C1 controls, and the bidirectional overrides and isolates that reorder what a
terminal displays (U+202A-U+202E, U+2066-U+2069). A backslash is left as it is, so a text that
already holds the four characters ``\\x1b`` prints the same as one holding ESC: harmless, and paths
with backslashes stay readable. ``--json`` output does not pass through here: JSON escapes control
characters itself.
"""

from __future__ import annotations

import re

_UNSAFE = "\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069"
_ONE_LINE = re.compile(f"[{_UNSAFE}\n]")
_LINES = re.compile(f"[{_UNSAFE}]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group(0))
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str, lines: bool = False) -> str:
    """``text`` with every control character written as an escape; ``lines`` keeps line breaks."""
    return (_LINES if lines else _ONE_LINE).sub(_escape, text)
