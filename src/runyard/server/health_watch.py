"""The health check's view of the database, kept by a thread of its own.

A load balancer asks ``/api/health`` every few seconds and wants the answer at once. Asking the
database for each check takes two hops between the event loop and a worker thread (the caller's
token, then the database), and under heavy load each hop waits its turn for the interpreter and the
loop: tens of milliseconds. Instead, ``runyard server`` runs a ``HealthWatch``: a thread asks the
database every PING_EVERY seconds, and the check answers from what it last heard (not answering if
that was more than STALE_AFTER seconds ago, or the last question failed), and takes again for
TOKEN_TTL seconds a token it has just seen accepted. So a revoked token may still read the health
check, and only it, for TOKEN_TTL seconds (the check says nothing but the server's version, schema
and a hash of its store).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

#: Seconds between the watch's questions to the database.
PING_EVERY = 1.0
#: A database whose last answer is older than this is reported as not answering.
STALE_AFTER = 5.0
#: Seconds a token the health check accepted is taken again without asking the database.
TOKEN_TTL = 5.0
#: Tokens remembered at most (a check sends the same one over and over).
MAX_TOKENS = 1000


class HealthWatch:
    def __init__(self, ping: Callable[[], object]) -> None:
        """``ping``: a question the database must answer (it may raise)."""
        self._ping = ping
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._answered_at: float | None = None
        self._error: str | None = None
        self._tokens: dict[bytes, tuple[Any, float]] = {}

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> HealthWatch:
        self._thread = threading.Thread(target=self._run, name="runyard-health", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._ping()
            except Exception as e:  # noqa: BLE001 - what the database said is the health check's answer
                self._error = str(e) or type(e).__name__
            else:
                self._answered_at, self._error = time.monotonic(), None
            self._stop.wait(PING_EVERY)

    def problem(self) -> str | None:
        """Why the database is not answering, or None if it answered a moment ago."""
        if self._error is not None:
            return self._error
        if self._answered_at is None:
            return "the database has not answered yet"
        silent = time.monotonic() - self._answered_at
        return f"the database has not answered for {silent:.0f} s" if silent > STALE_AFTER else None

    # -- the tokens the check accepted (security.Gate asks, for the health check's path only) --------

    def token(self, key: bytes) -> Any | None:
        """The token whose secret hashes to ``key``, if accepted within TOKEN_TTL and the watch runs."""
        if not self.running:
            return None  # an app without the watch (in a test) asks the database each time
        found = self._tokens.get(key)
        if found is None or time.monotonic() - found[1] > TOKEN_TTL:
            return None
        return found[0]

    def accepted(self, key: bytes, token: Any) -> None:
        if len(self._tokens) >= MAX_TOKENS:
            self._tokens.clear()
        self._tokens[key] = (token, time.monotonic())
