"""Run ids: ULIDs (48-bit millisecond time, 80 random bits, Crockford base32), sortable by creation.

Written here rather than imported because the ULID package takes tens of milliseconds to import
(it loads importlib.metadata), and ``runyard.init()`` must return at once. Within one process, ids
made in the same millisecond stay in order (the random part is incremented, as the ULID spec's
monotonic variant does).
"""

from __future__ import annotations

import os
import threading
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_lock = threading.Lock()
_last = (0, 0)


def _encode(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def new_ulid() -> str:
    global _last
    with _lock:
        millis = time.time_ns() // 1_000_000
        last_millis, last_random = _last
        if millis <= last_millis:
            millis, random = last_millis, (last_random + 1) & ((1 << 80) - 1)
        else:
            random = int.from_bytes(os.urandom(10), "big")
        _last = (millis, random)
    return _encode(millis, 10) + _encode(random, 16)
