"""Requests per second per token: a token bucket for each token (or browser session) in use.

A bucket holds up to ``burst`` requests and refills at ``rate`` a second; a request finding it
empty is answered 429 with ``Retry-After``. The defaults are above what one client of runyard's
sends, which makes its requests one after another (the CLI, the SDK's shipper, a dashboard): the
limit is for a token sending many requests at once, which otherwise slows every other caller.
Buckets are keyed by a digest of the credential, so a token already over its limit is refused
before the database is asked who it is; only credentials the server accepted get a bucket.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable


class RateLimit:
    """At most ``burst`` requests at once per key, then ``rate`` a second."""

    #: Buckets kept before the full ones (idle for ``burst / rate`` seconds) are dropped.
    PRUNE_AT = 10_000

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"a rate limit needs a rate above 0 and a burst of at least 1 (got {rate}, {burst})")
        self.rate = rate
        self.burst = burst
        self.clock = clock
        #: key -> (requests left, when that was counted)
        self._buckets: dict[bytes, tuple[float, float]] = {}

    def _left(self, key: bytes, now: float) -> float:
        left, at = self._buckets.get(key, (float(self.burst), now))
        return min(float(self.burst), left + (now - at) * self.rate)

    def wait(self, key: bytes) -> float:
        """Seconds until ``key`` may make a request (0: now), without counting one."""
        if key not in self._buckets:
            return 0.0
        left = self._left(key, self.clock())
        return 0.0 if left >= 1 else (1 - left) / self.rate

    def take(self, key: bytes) -> float:
        """Count a request of ``key``: 0 when it is within the limit, else the seconds to wait."""
        now = self.clock()
        left = self._left(key, now)
        if left < 1:
            self._buckets[key] = (left, now)
            return (1 - left) / self.rate
        if len(self._buckets) >= self.PRUNE_AT and key not in self._buckets:
            self._buckets = {k: v for k, v in self._buckets.items() if self._left(k, now) < self.burst}
        self._buckets[key] = (left - 1, now)
        return 0.0


def retry_after(seconds: float) -> str:
    """Whole seconds for a ``Retry-After`` header: never 0, which a client could take for "now"."""
    return str(max(1, math.ceil(seconds)))
