"""Teeing stdout and stderr into the run's log: the user still sees everything.

The log keeps lines as a terminal shows them (``runyard.sdk.lines``: a carriage return redraws the
line, an overlong line is cut), the same way the supervisor captures a launched command's output.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any, TextIO

from runyard.sdk.lines import MAX_LINE, Lines
from runyard.spool import records

__all__ = ["MAX_LINE", "Tee", "install"]


class Tee:
    def __init__(self, original: TextIO, stream: str, emit: Callable[[tuple[Any, ...]], None]) -> None:
        self._original = original
        self._lines = Lines(lambda now, text: emit((records.UNNUMBERED, records.LOG, now, stream, text)))
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        written = self._original.write(text)
        if isinstance(text, str):
            with self._lock:
                self._lines.feed(text)
        return written

    def flush(self) -> None:
        self._original.flush()

    def close_line(self) -> None:
        with self._lock:
            self._lines.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._original, name)


def install(emit: Callable[[tuple[Any, ...]], None]) -> Callable[[], None]:
    """Tee sys.stdout and sys.stderr; returns the function that undoes it."""
    out, err = sys.stdout, sys.stderr
    tee_out, tee_err = Tee(out, "stdout", emit), Tee(err, "stderr", emit)
    sys.stdout, sys.stderr = tee_out, tee_err

    def uninstall() -> None:
        tee_out.close_line()
        tee_err.close_line()
        if sys.stdout is tee_out:
            sys.stdout = out
        if sys.stderr is tee_err:
            sys.stderr = err

    return uninstall
