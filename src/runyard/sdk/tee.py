"""Teeing stdout and stderr into the run's log: the user still sees everything.

Each complete line becomes a log record. A carriage return starts the line over, as a terminal
shows it, so a progress bar yields its final state rather than a thousand updates.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

from runyard.spool import records

MAX_LINE = 64 * 1024


class Tee:
    def __init__(self, original: TextIO, stream: str, emit: Callable[[tuple[Any, ...]], None]) -> None:
        self._original = original
        self._stream = stream
        self._emit = emit
        self._partial = ""
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        written = self._original.write(text)
        if not isinstance(text, str):
            return written
        with self._lock:
            buffer = self._partial + text
            *lines, self._partial = buffer.split("\n")
            now = time.time()
            for line in lines:
                self._emit((records.UNNUMBERED, records.LOG, now, self._stream, _rendered(line)))
            if len(self._partial) > MAX_LINE:
                self._emit((records.UNNUMBERED, records.LOG, now, self._stream, _rendered(self._partial)))
                self._partial = ""
        return written

    def flush(self) -> None:
        self._original.flush()

    def close_line(self) -> None:
        with self._lock:
            if self._partial:
                self._emit((records.UNNUMBERED, records.LOG, time.time(), self._stream, _rendered(self._partial)))
                self._partial = ""

    def __getattr__(self, name: str) -> Any:
        return getattr(self._original, name)


def _rendered(line: str) -> str:
    line = line.rstrip("\r")
    return line.rsplit("\r", 1)[-1] if "\r" in line else line


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
