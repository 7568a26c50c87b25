"""Alert rules on the ingest stream, and the outbox that acts on what fired.

``Watcher``: after each applied batch, whoever applied it (the agent, the server, ``runyard sync``,
any process that catches up a dead writer's spool) evaluates the rules on it. What fires is written
to the store's inbox (``alert_events``) with what remains to do: channels to deliver to, and
whether the run must be stopped. Ingest itself never waits on a channel.

``Outbox``: in the agent and the server, a thread that reads those events from the store and does
what they ask: stops the run, hands the notice to the dispatcher (alerts/dispatch.py), and records
each delivery. Working from the store, nothing is lost when the process that evaluated a rule is
gone before the notice went out.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from runyard.alerts.dispatch import GIVE_UP_AFTER, Dispatcher, Notice, NotifySettings
from runyard.alerts.evaluate import Evaluator, Fired
from runyard.errors import RunyardError
from runyard.store.api import AlertEvent, IngestBatch
from runyard.types import RunStatus

log = logging.getLogger(__name__)


class Watcher:
    def __init__(self, store: Any, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self.evaluator = Evaluator()
        #: The store's rules as last read, and their stamp then (see SqlStore.alert_rules_stamp).
        self._stamp: tuple[int, int] | None = None
        self._projects: dict[int, str] = {}
        self._stored: list[Any] = []
        #: Rules that came with a run's launch (its project's runyard.toml), by run number.
        self._carried: dict[int, list[Any]] = {}
        # The server applies batches from several threads at once; the rules' memory is shared.
        self._lock = threading.Lock()

    def _rules(self) -> None:
        # A rule added a moment ago applies to the very next batch: a cache by age would let the
        # batches of its first seconds through unchecked.
        stamp = self.store.alert_rules_stamp()
        if stamp != self._stamp:
            self._stored = [r for r in self.store.list_alert_rules() if r.enabled]
            self._stamp = stamp
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
            delivery: dict[str, Any] = {"pending": [c for c in rule.notify if c != "inbox"], "action": rule.action,
                                        "rule": rule.name, "done": rule.action != "stop"}
            rule_id = rule.id if rule.id > 0 else None  # a rule from runyard.toml is in no table
            self.store.add_alert_event(AlertEvent(f.run, rule.kind, f.message, f.time, rule_id, f.metric, f.step,
                                                  f.value, delivery=delivery))


class Outbox:
    """Acts on recorded alerts: stops runs, hands notices to the dispatcher, records deliveries."""

    def __init__(self, store: Any, dispatcher: Dispatcher, stop: Callable[[int, str], object],
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.dispatcher = dispatcher
        self.stop = stop
        self.clock = clock
        self._after = 0
        self._started = clock()
        self._runs: dict[int, tuple[str, NotifySettings | None]] = {}
        #: How each event handed over stands (the outbox thread and the dispatcher's both update it).
        self._deliveries: dict[int, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()
        dispatcher.on_delivered = self._delivered

    def start(self, interval: float = 0.25) -> Outbox:
        def loop() -> None:
            while not self._closed.wait(interval):
                try:
                    self.poll()
                except RunyardError as e:
                    log.warning("alerts: %s", e)

        self._thread = threading.Thread(target=loop, name="runyard-outbox", daemon=True)
        self._thread.start()
        self.dispatcher.start()
        return self

    def close(self) -> None:
        self._closed.set()
        self.dispatcher.close()

    def poll(self) -> int:
        """Act on the events recorded since the last look (at start: those of the last day)."""
        events = self.store.alert_events_after(self._after, self._started - GIVE_UP_AFTER)
        for event in events:
            self._after = max(self._after, event.id)
            delivery = dict(event.delivery or {})
            if not delivery.get("done"):
                try:
                    self.stop(event.run, event.message)
                finally:
                    delivery["done"] = True
                    self.store.set_alert_delivery(event.id, delivery)
            channels = tuple(delivery.get("pending") or ())
            if channels:
                with self._lock:
                    self._deliveries[event.id] = delivery
                project, settings = self._run_of(event.run)
                self.dispatcher.put(Notice(event.id, event.run, project, event.kind, event.message, event.time,
                                           channels, delivery.get("rule"), settings))
        return len(events)

    def _run_of(self, number: int) -> tuple[str, NotifySettings | None]:
        """The run's project, and the [notify] table its project file gave it, if any. Read once per
        run: a rule that keeps firing must not cost ingest a run read per alert."""
        if number not in self._runs:
            run = self.store.get_run(number)
            table = (run.launch or {}).get("notify")
            settings = None
            if isinstance(table, dict):
                try:
                    settings = NotifySettings.from_table(table, f"run {run.number}")
                except RunyardError as e:
                    log.warning("%s", e)
            self._runs[number] = (run.project, settings)
        return self._runs[number]

    def _delivered(self, channel: str, notices: list[Notice]) -> None:
        for notice in notices:
            with self._lock:
                delivery = self._deliveries.get(notice.event_id)
                if delivery is None:
                    continue
                delivery["pending"] = [c for c in delivery.get("pending") or () if c != channel]
                delivery.setdefault("delivered", {})[channel] = self.clock()
                if not delivery["pending"]:
                    del self._deliveries[notice.event_id]
                recorded = dict(delivery)
            self.store.set_alert_delivery(notice.event_id, recorded)
