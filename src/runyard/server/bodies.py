"""Request bodies on their way to a file, written off the event loop.

A write to a file can wait for the disk: while the kernel writes dirty pages back, it holds up the
processes that make more (a few uploads of hundreds of MiB do), and a write made on the event loop
would hold up every other request meanwhile, the health check included (``bench/abuse.py`` saw
200 ms). A body goes to its file in pieces of up to PIECE bytes, each written by a worker thread;
the next piece is read from the socket once the last one is written, so a slow disk slows its own
upload (through flow control), not the server.
"""

from __future__ import annotations

from typing import IO

import anyio

#: Bytes gathered before a worker thread writes them.
PIECE = 1 << 20


class BodyFile:
    """Writes to ``f`` from the event loop's side, without blocking it. ``in_memory``: bytes that
    may be written on the loop itself first, because ``f`` keeps them in memory (a spooled file)."""

    def __init__(self, f: IO[bytes], in_memory: int = 0) -> None:
        self.f = f
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._in_memory = in_memory

    async def write(self, chunk: bytes) -> None:
        if not self._pending and len(chunk) <= self._in_memory:
            self._in_memory -= len(chunk)
            self.f.write(chunk)
            return
        self._in_memory = 0  # from here on the file is on disk
        self._pending.append(chunk)
        self._pending_size += len(chunk)
        if self._pending_size >= PIECE:
            await self.flush()

    async def flush(self) -> None:
        """Write what is gathered (call once the body has ended, before using the file)."""
        if not self._pending:
            return
        data = b"".join(self._pending)
        self._pending.clear()
        self._pending_size = 0
        await anyio.to_thread.run_sync(self.f.write, data)
