"""Alert rules on the ingest stream: after each applied batch, evaluate it; what fires goes to the
store's inbox (``alert_events``) at once, and a run whose rule says ``stop`` is stopped.

Delivery to other channels (webhook, email, desktop) is not done here: it happens apart from
ingest, so that a dead webhook never slows it (see ``alerts/dispatch.py``). The stop itself is
handed in by whoever runs the ingester (the agent or the server), since ingest does not launch or
stop anything itself.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from runyard.alerts.evaluate import Evaluator, Fired
from runyard.store.api import AlertEvent, IngestBatch
from runyard.types import RunStatus

log = logging.getLogger(__name__)
#: How often the rules are read again from the store (they change rarely).
RULES_TTL = 2.0


class Watcher:
    def __init__(self, store: Any, stop: Callable[[int, str], object] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.stop = stop
        self.clock = clock
        self.evaluator = Evaluator()
        self._loaded = -RULES_TTL
        self._projects: dict[int, str] = {}
        self._stored: list[Any] = []
        #: Rules that came with a run's launch (its project's runyard.toml), by run number.
        self._carried: dict[int, list[Any]] = {}
        # The server applies batches from several threads at once; the rules' memory is shared.
        self._lock = threading.Lock()

    def _rules(self) -> None:
        now = time.monotonic()
        if now - self._loaded >= RULES_TTL:
            self._stored = [r for r in self.store.list_alert_rules() if r.enabled]
            self._loaded = now
        self.evaluator.rules = [*self._stored, *(r for rules in self._carried.values() for r in rules)]

    def _project(self, number: int) -> str:
        """The run's project; the first time, also the rules its launch carried (runyard.toml)."""
        if number not in self._projects:
            from runyard.alerts.rules import arrived

            run = self.store.get_run(number)
            self._projects[number] = run.project
            carried = (run.launch or {}).get("alerts") or []
            if carried:
                self._carried[number] = [arrived(data, number, i) for i, data in enumerate(carried)]
                self._rules()
        return self._projects[number]

    def after_ingest(self, number: int, batch: IngestBatch) -> list[Fired]:
        """Evaluate what ``batch`` (just applied to run ``number``) brought."""
        with self._lock:
            return self._after_ingest(number, batch)

    def _after_ingest(self, number: int, batch: IngestBatch) -> list[Fired]:
        project = self._project(number)
        self._rules()
        if not self.evaluator.rules:
            return []
        now = self.clock()
        fired = self.evaluator.on_points(number, project, batch.points, now) if batch.points else []
        if batch.logs:
            self.evaluator.on_logs(number, now)
        if batch.end is not None:
            status = str(batch.end.get("status", "finished"))
            fired += self.evaluator.on_status(number, project, status, now, batch.end.get("message"))
        self._record(fired)
        return fired

    def after_status(self, number: int, status: str, message: str | None = None) -> list[Fired]:
        """A run changed state outside a batch (marked lost, stopped)."""
        with self._lock:
            self._rules()
            fired = self.evaluator.on_status(number, self._project(number), status, self.clock(), message)
            self._record(fired)
            return fired

    def tick(self) -> list[Fired]:
        """Rules about time passing (stalled), for the runs running now."""
        with self._lock:
            self._rules()
            if not any(r.kind == "stalled" for r in self.evaluator.rules):
                return []
            active = [(r.number, r.project) for r in self.store.runs_with_status([RunStatus.RUNNING])]
            fired = self.evaluator.on_tick(active, self.clock())
            self._record(fired)
            return fired

    def _record(self, fired: list[Fired]) -> None:
        for f in fired:
            rule = f.rule
            channels = [c for c in rule.notify if c != "inbox"]
            delivery: dict[str, Any] = {"pending": channels, "action": rule.action}
            rule_id = rule.id if rule.id > 0 else None  # a rule from runyard.toml is in no table
            self.store.add_alert_event(AlertEvent(f.run, rule.kind, f.message, f.time, rule_id, f.metric, f.step,
                                                  f.value, delivery={**delivery, "rule": rule.name}))
            if rule.action == "stop" and self.stop is not None:
                try:
                    self.stop(f.run, f.message)
                except Exception:  # an alert must not end ingest; the event is kept
                    log.exception("could not stop run %s for alert %s", f.run, rule.name)
