"""Turning a process's output into log lines, as a terminal would show them.

One path for both captures: the SDK's tee (text written to ``sys.stdout``) and the supervisor
(bytes read from a launched command's pipes). A carriage return starts the line over, so a
progress bar redrawn a thousand times is kept as its final state; a line longer than
``MAX_LINE`` characters keeps its first ``MAX_LINE`` and says how many more it had. Memory stays
bounded whatever the process prints: the line being built never holds more than ``MAX_LINE``.
"""

from __future__ import annotations

import codecs
import time
from collections.abc import Callable
from typing import IO

#: Characters kept of one line; what follows, up to its newline, is counted and dropped.
MAX_LINE = 64 * 1024
#: Bytes read from a pipe at a time.
CHUNK = 64 * 1024


class Lines:
    """Feed text in any pieces; each complete line goes to ``emit(time, text)``.

    Not thread-safe: one writer at a time (the tee holds a lock, a pipe has one reader).
    """

    def __init__(self, emit: Callable[[float, str], None], limit: int = MAX_LINE) -> None:
        self._emit = emit
        self._limit = limit
        self._line: list[str] = []
        self._size = 0
        #: Characters of the current line dropped beyond the limit.
        self._cut = 0
        #: A carriage return ended the text so far: the next character (unless a newline) redraws.
        self._redraw = False

    def feed(self, text: str) -> None:
        start = 0
        while (newline := text.find("\n", start)) >= 0:
            self._add(text[start:newline])
            self._end_line()
            start = newline + 1
        if start < len(text):
            self._add(text[start:])

    def close(self) -> None:
        """End the unfinished line, if any (the stream ended without a newline)."""
        if self._size or self._cut:
            self._end_line()
        self._redraw = False

    def _add(self, piece: str) -> None:
        if not piece:
            return
        stripped = piece.rstrip("\r")
        if stripped and self._redraw:
            self._restart()
        self._redraw = len(stripped) < len(piece)  # "50%\r" then "\n" keeps "50%"; then "60%" redraws
        if "\r" in stripped:
            self._restart()
            stripped = stripped.rsplit("\r", 1)[1]
        room = self._limit - self._size
        if len(stripped) > room:
            self._cut += len(stripped) - room
            stripped = stripped[:room]
        if stripped:
            self._line.append(stripped)
            self._size += len(stripped)

    def _restart(self) -> None:
        self._line.clear()
        self._size = 0
        self._cut = 0

    def _end_line(self) -> None:
        text = "".join(self._line)
        if self._cut:
            text += f" [runyard: line cut at {self._limit:,} characters; {self._cut:,} more not kept]"
        self._restart()
        self._redraw = False
        self._emit(time.time(), text)


def pump(stream: IO[bytes], lines: Lines) -> None:
    """Read a pipe to its end into ``lines``, ``CHUNK`` bytes at a time (never a whole line at
    once: a line without a newline may be endless). Invalid UTF-8 becomes U+FFFD."""
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    read = getattr(stream, "read1", stream.read)
    while chunk := read(CHUNK):
        lines.feed(decoder.decode(chunk))
    lines.feed(decoder.decode(b"", final=True))
    lines.close()
