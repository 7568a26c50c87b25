"""What the server takes at once: connections, heavy requests, upload sizes, and the threads kept
for health checks.

A request that decodes a body in memory (ingest, a big JSON body) takes one of a few decode slots,
and an upload one of the upload slots (it streams to disk, but holds a thread, a file and disk
bandwidth). A request that finds no slot free within ``slot_wait`` seconds is answered 503 with
``Retry-After``: memory stays bounded by the slots, not by how many clients ask at once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio

from runyard.errors import Busy

#: Seconds a client refused for capacity is told to wait (``Retry-After``).
RETRY_AFTER_SECONDS = 5


@dataclass(frozen=True)
class Limits:
    """The server's capacity; ``runyard server`` flags set some of these (see cli/server.py)."""

    #: Open connections at most; a request on a connection past it is answered 503.
    max_connections: int = 500
    #: Seconds a connection may take to send a request's headers (from its first byte, or from the
    #: connection's opening); then it is closed (408).
    header_timeout: float = 10.0
    #: Bytes a second a request's body must arrive at, on average over each ``body_window`` seconds
    #: while the server is reading it; a slower one is cut off (408, closed), so that a client
    #: sending a byte at a time cannot hold a connection, an upload or a decode slot for long.
    min_body_rate: int = 1024
    body_window: float = 10.0
    #: Seconds an idle keep-alive connection stays open between requests.
    keep_alive: int = 5
    #: Requests decoding a body in memory at once (ingest, JSON bodies over LIGHT_BODY).
    decode_slots: int = 2
    #: Uploads streaming to disk at once.
    upload_slots: int = 4
    #: Seconds a heavy request waits for a slot before it is answered 503.
    slot_wait: float = 10.0
    #: Largest upload (artifact or blob), in bytes, whatever its content type.
    max_upload: int = 256 << 30
    #: Requests a token (or a browser session) may make per second, sustained, and at once: past
    #: them it is answered 429 with Retry-After (see ratelimit.py). A client of runyard makes its
    #: requests one after another and gets nowhere near these.
    rate: float = 500.0
    burst: int = 5000
    #: Threads kept for health checks (their token check and database check), which no other
    #: request may take: a load balancer's probe never waits behind the server's other work.
    health_threads: int = 2


class Capacity:
    """At most ``slots`` holders at once; a request waits ``wait`` seconds for a place, then is
    refused with ``Busy`` (503 with Retry-After)."""

    def __init__(self, what: str, slots: int, wait: float) -> None:
        self.what = what
        self.slots = slots
        self.wait = wait
        self._semaphore = anyio.Semaphore(slots)

    @property
    def busy(self) -> int:
        return self.slots - self._semaphore.value

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        acquired = False
        with anyio.move_on_after(self.wait):
            await self._semaphore.acquire()
            acquired = True
        if not acquired:
            raise Busy(f"the server is handling {self.slots} {self.what} at once already; try again in "
                       f"{RETRY_AFTER_SECONDS} s", RETRY_AFTER_SECONDS)
        try:
            yield
        finally:
            self._semaphore.release()
