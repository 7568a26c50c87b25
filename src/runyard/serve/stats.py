"""A model server's own metrics: requests, latency and errors per window, logged as the run's metrics
(``serve/...``), so that charts and alerts (``serve/error_rate`` above 0.05) work as for training."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

#: Seconds per window: each logs one point of every metric.
WINDOW = 10.0
#: Latencies kept per window for its percentiles (a busy window is sampled evenly past this).
KEPT_LATENCIES = 20_000


class Stats:
    """Counts requests as they end; ``flush()`` turns the window into metrics."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._window_started = time.monotonic()
        self._latencies: list[float] = []
        self._seen = 0
        self._requests = 0
        self._errors = 0
        self._rejected = 0
        self.total_requests = 0
        self.total_errors = 0

    def record(self, seconds: float, status: int) -> None:
        with self._lock:
            self._seen += 1
            self._requests += 1
            self.total_requests += 1
            if status >= 500:
                self._errors += 1
                self.total_errors += 1
            elif status >= 400:
                self._rejected += 1
            if len(self._latencies) < KEPT_LATENCIES:
                self._latencies.append(seconds)
            else:  # reservoir: every request equally likely to be kept
                import random

                slot = random.randrange(self._seen)  # noqa: S311 - sampling, not a secret
                if slot < KEPT_LATENCIES:
                    self._latencies[slot] = seconds

    def flush(self) -> dict[str, float]:
        """The window's metrics, and a new window."""
        with self._lock:
            now = time.monotonic()
            elapsed = max(now - self._window_started, 1e-9)
            latencies, requests, errors, rejected = self._latencies, self._requests, self._errors, self._rejected
            self._latencies, self._requests, self._errors, self._rejected, self._seen = [], 0, 0, 0, 0
            self._window_started = now
            totals = (self.total_requests, self.total_errors)
        metrics: dict[str, float] = {
            "serve/requests": float(totals[0]), "serve/errors": float(totals[1]),
            "serve/requests_per_s": requests / elapsed,
            "serve/error_rate": errors / requests if requests else 0.0,
            "serve/rejected": float(rejected),
        }
        if latencies:
            latencies.sort()
            metrics["serve/latency_p50_ms"] = _quantile(latencies, 0.50) * 1000
            metrics["serve/latency_p99_ms"] = _quantile(latencies, 0.99) * 1000
        return metrics


def _quantile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Reporter:
    """Flushes ``stats`` every ``every`` seconds into ``sink`` (the run's ``log``), from a thread."""

    def __init__(self, stats: Stats, sink: Callable[[dict[str, float]], Any], every: float = WINDOW) -> None:
        self.stats, self.sink, self.every = stats, sink, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="runyard-serve-stats", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            self.sink(self.stats.flush())

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sink(self.stats.flush())  # the last window's requests are counted too
