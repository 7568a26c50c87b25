"""Alert rules on the ingest stream, and the outbox that acts on what fired.

``Watcher``: after each applied batch, whoever applied it (the agent, the server, ``runyard sync``,
any process that catches up a dead writer's spool) evaluates the rules on it. What fires is written
to the store's inbox (``alert_events``) with what remains to do: channels to deliver to, and
whether the run must be stopped. Ingest itself never waits on a channel.

What the rules remember about a run (cooldowns, best values, plateau and idle windows) lives in the
store (``alert_state``), so that a restarted agent, or a second ingester on the same database,
continues from it rather than saying an alert again. A watcher reads a run's states when it first
evaluates the run and keeps them; after each evaluation it writes the states that changed and the
alerts that fired in one transaction, as a compare-and-set on each state's version. If another
process changed a state meanwhile, nothing is written: the watcher reads the states again and
evaluates the batch anew, so each alert is recorded once. The write follows the batch's own
transaction rather than joining it: ingest stays free of rule evaluation (and of its failures),
and a crash between the two can at worst leave that one batch unevaluated, never evaluated twice.

``Outbox``: in the agent and the server, a thread that reads those events from the store and does
what they ask: stops the run, hands the notice to the dispatcher (alerts/dispatch.py), and records
each delivery. Each event belongs to the sender group of the process that fired it (a digest of its
home's ``[notify]`` table, ``dispatch.sender_of``), so it is delivered with the settings in force
where it fired, whichever processes share the database. Exactly one outbox per group acts: the one
holding the store's ``outbox`` lease of that group (renewed while it lives; taken over by another
of the group when it lapses, and given up at once on exit). Working from the store, nothing is lost
when the process that evaluated a rule is gone before the notice went out.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from runyard.alerts.dispatch import GIVE_UP_AFTER, Dispatcher, Notice, NotifySettings
from runyard.alerts.evaluate import Evaluator, Fired
from runyard.errors import Conflict, RunyardError
from runyard.store.api import AlertEvent, IngestBatch
from runyard.types import RunStatus

log = logging.getLogger(__name__)


class Watcher:
    #: Evaluations of one batch retried when other ingesters keep changing the same run's states.
    RETRIES = 8

    def __init__(self, store: Any, clock: Callable[[], float] = time.time,
                 sender: str | Callable[[], str] = "") -> None:
        self.store = store
        #: The outbox group that acts on what this watcher fires (``dispatch.sender_of``); a callable
        #: is asked when something first fires (a catch-up that fires nothing need not read [notify]).
        self._sender = sender
        self.clock = clock
        self.evaluator = Evaluator()
        #: The store's rules as last read, and their stamp then (see SqlStore.alert_rules_stamp).
        self._stamp: tuple[int, int] | None = None
        self._projects: dict[int, str] = {}
        self._stored: list[Any] = []
        #: Rules that came with a run's launch (its project's runyard.toml), by run number.
        self._carried: dict[int, list[Any]] = {}
        #: Runs whose rule states were read from the store, and the version of each state read.
        self._loaded: set[int] = set()
        self._versions: dict[tuple[int, int], int] = {}
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

        def evaluate() -> list[Fired]:
            fired = self.evaluator.on_points(number, project, batch.points, now) if batch.points else []
            if batch.logs:
                self.evaluator.on_logs(number, now)
            if batch.end is not None:
                status = str(batch.end.get("status", "finished"))
                fired += self.evaluator.on_status(number, project, status, now, batch.end.get("message"))
            return fired

        return self._evaluate(number, evaluate)

    def after_status(self, number: int, status: str, message: str | None = None) -> list[Fired]:
        """A run changed state outside a batch (marked lost, stopped)."""
        with self._lock:
            self._rules()
            project, now = self._project(number), self.clock()
            return self._evaluate(number, lambda: self.evaluator.on_status(number, project, status, now, message))

    def tick(self) -> list[Fired]:
        """Rules about time passing (stalled), for the runs running now."""
        with self._lock:
            self._rules()
            if not any(r.kind == "stalled" for r in self.evaluator.rules):
                return []
            active = [(r.number, r.project) for r in self.store.runs_with_status([RunStatus.RUNNING])]
            # Whichever process applied a run's records, the store knows when it last logged.
            seen = self.store.last_activity([number for number, _ in active])
            now = self.clock()
            fired: list[Fired] = []
            for number, project in active:
                tick = functools.partial(self.evaluator.on_tick, [(number, project)], now, seen)
                fired += self._evaluate(number, tick)
            return fired

    def _load(self, number: int) -> None:
        """Read what the rules remember about run ``number`` from the store."""
        stored = self.store.alert_states(number)
        self.evaluator.set_states(number, {rule_id: state for rule_id, (state, _) in stored.items()})
        for key in [k for k in self._versions if k[1] == number]:
            del self._versions[key]
        self._versions.update({(rule_id, number): version for rule_id, (_, version) in stored.items()})
        self._loaded.add(number)

    def _evaluate(self, number: int, evaluate: Callable[[], list[Fired]]) -> list[Fired]:
        """Run ``evaluate`` (it changes the rules' memory of run ``number`` and returns what fired),
        then record what changed and what fired in one compare-and-set (see the module's doc)."""
        if number not in self._loaded:
            self._load(number)
        try:
            for _attempt in range(self.RETRIES):
                before = self.evaluator.states_of(number)
                fired = evaluate()
                blank = self.evaluator.blank()
                changed = {rule_id: (state, self._versions.get((rule_id, number)))
                           for rule_id, state in self.evaluator.states_of(number).items()
                           if before.get(rule_id, blank) != state}
                if not changed:
                    return fired  # nothing fired either: firing always records when
                stale = self.store.save_alert_states(number, changed, [self._event(f, self.sender) for f in fired])
                if not stale:
                    for rule_id, (_, version) in changed.items():
                        self._versions[(rule_id, number)] = (version or 0) + 1
                    return fired
                self._load(number)  # another ingester evaluated this run meanwhile: continue from its state
        except BaseException:
            self._loaded.discard(number)  # memory may be ahead of the store now: read it again next time
            raise
        self._loaded.discard(number)
        raise Conflict(f"alert rules of run {number}: other ingesters kept changing their state; "
                       "this batch was not evaluated")

    @property
    def sender(self) -> str:
        if callable(self._sender):
            self._sender = self._sender()
        return self._sender

    @staticmethod
    def _event(f: Fired, sender: str) -> AlertEvent:
        rule = f.rule
        delivery: dict[str, Any] = {"pending": [c for c in rule.notify if c != "inbox"], "action": rule.action,
                                    "rule": rule.name, "done": rule.action != "stop", "sender": sender}
        rule_id = rule.id if rule.id > 0 else None  # a rule from runyard.toml is in no table
        return AlertEvent(f.run, rule.kind, f.message, f.time, rule_id, f.metric, f.step, f.value, delivery=delivery)


class Outbox:
    """Acts on recorded alerts: stops runs, hands notices to the dispatcher, records deliveries.

    Only while it holds its sender group's ``outbox`` lease (see the module's doc), and only on the
    events of its group; ``holder`` names this process in the lease.
    """

    def __init__(self, store: Any, dispatcher: Dispatcher, stop: Callable[[int, str], object],
                 clock: Callable[[], float] = time.time, holder: str | None = None, lease: float = 30.0,
                 sender: str = "") -> None:
        from runyard.ids import new_ulid

        self.sender = sender
        self.LEASE = f"outbox:{sender}" if sender else "outbox"
        self.store = store
        self.dispatcher = dispatcher
        self.stop = stop
        self.clock = clock
        self.holder = holder or new_ulid()
        self.lease = lease
        self._after = 0
        self._started = clock()
        self._runs: dict[int, tuple[str, NotifySettings | None]] = {}
        #: How each event handed over stands (the outbox thread and the dispatcher's both update it).
        self._deliveries: dict[int, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()
        #: Until when (monotonic) this outbox holds the lease, and when it next renews or asks for it.
        self._held_until = 0.0
        self._ask_at = 0.0
        dispatcher.on_delivered = self._delivered
        dispatcher.on_refused = self._refused
        dispatcher.holding = self.holding

    def start(self, interval: float = 0.25) -> Outbox:
        def loop() -> None:
            while not self._closed.wait(interval):
                try:
                    self.poll()
                except Exception as e:  # noqa: BLE001 - the outbox thread must outlive any one failure
                    log.warning("alerts: %s: %s", type(e).__name__, e)

        self._thread = threading.Thread(target=loop, name="runyard-outbox", daemon=True)
        self._thread.start()
        self.dispatcher.start()
        return self

    def close(self) -> None:
        self._closed.set()
        self.dispatcher.close()
        if self._thread is not None:
            self._thread.join(10)
        if self._held_until > 0:
            # Handed over at once: another process on this database need not wait for the lease to lapse.
            self._held_until = 0.0
            try:
                self.store.release_lease(self.LEASE, self.holder)
            except Exception as e:  # noqa: BLE001 - closing: the lease lapses by itself anyway
                log.warning("alerts: could not give up the outbox lease: %s", e)

    def holding(self) -> bool:
        """Whether this outbox may act now (it holds the lease, as far as it knows)."""
        return time.monotonic() < self._held_until

    def _hold(self) -> bool:
        now = time.monotonic()
        if now >= self._ask_at:
            if self.store.take_lease(self.LEASE, self.holder, self.lease, socket.gethostname(),
                                     {"pid": os.getpid()}):
                self._held_until, self._ask_at = now + self.lease, now + self.lease / 3
            else:
                if self._held_until > 0:
                    self._let_go()
                self._held_until, self._ask_at = 0.0, now + min(1.0, self.lease / 3)
        return self.holding()

    def _let_go(self) -> None:
        """Another process holds the lease now: it acts on every event from the store's state, so
        this one forgets what it had in hand."""
        self.dispatcher.clear()
        with self._lock:
            self._deliveries.clear()
        self._after = 0

    def poll(self) -> int:
        """Act on this group's events recorded since the last look (on taking the lease: those of the
        last day); returns how many."""
        if not self._hold():
            return 0
        if self._after == 0:
            self._started = self.clock()
        events = self.store.alert_events_after(self._after, self._started - GIVE_UP_AFTER)
        acted = 0
        for event in events:
            self._after = max(self._after, event.id)
            delivery = dict(event.delivery or {})
            if delivery.get("sender", "") != self.sender:
                # Another group's notices go out with the settings of where it fired. A stop needs no
                # settings: whoever sees it first acts (stopping twice is harmless), so that a group
                # with no live member (its [notify] changed, its last process gone) stops no run late.
                if not delivery.get("done"):
                    try:
                        self.stop(event.run, event.message)
                    finally:
                        self.store.set_alert_delivery(event.id, {**delivery, "done": True})
                continue
            acted += 1
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
        return acted

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
        self._settled(channel, notices, "delivered", self.clock())

    def _refused(self, channel: str, notices: list[Notice], reason: str) -> None:
        # Recorded as settled: the next process to take the lease must not try the same address again.
        self._settled(channel, notices, "refused", reason)

    def _settled(self, channel: str, notices: list[Notice], how: str, value: Any) -> None:
        for notice in notices:
            with self._lock:
                delivery = self._deliveries.get(notice.event_id)
                if delivery is None:
                    continue
                delivery["pending"] = [c for c in delivery.get("pending") or () if c != channel]
                delivery.setdefault(how, {})[channel] = value
                if not delivery["pending"]:
                    del self._deliveries[notice.event_id]
                recorded = dict(delivery)
            self.store.set_alert_delivery(notice.event_id, recorded)
