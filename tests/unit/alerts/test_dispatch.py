"""Delivering alerts: real loopback webhook and SMTP servers, digests, retries, and ingest that never waits."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest

from runyard.alerts.dispatch import Dispatcher, Notice, NotifySettings, in_quiet_hours
from runyard.store.api import AlertRule, IngestBatch
from runyard.store.newrun import NewRun
from runyard.store.series import Points
from runyard.store.sql import SqlStore
from runyard.types import RunStatus


class Hook:
    """A loopback webhook: answers with the given statuses in turn (then 200), or blocks until released."""

    def __init__(self, statuses: list[int] | None = None, block: bool = False) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.statuses = list(statuses or [])
        self.release = threading.Event()
        if not block:
            self.release.set()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                hook.release.wait(30)
                status = hook.statuses.pop(0) if hook.statuses else 200
                if status == 200:
                    hook.bodies.append(body)
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()


@pytest.fixture
def hook() -> Iterator[Hook]:
    h = Hook()
    yield h
    h.close()


def notice(n: int, kind: str = "nan", channels: tuple[str, ...] = ("webhook",), **kw: Any) -> Notice:
    return Notice(n, n, "gan", kind, f"rule: message {n}", 1000.0 + n, channels, "rule", **kw)


def wait(check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not in time"
        time.sleep(0.02)


def test_the_webhook_receives_exactly_the_documented_json(hook: Hook) -> None:
    d = Dispatcher(lambda n: NotifySettings(webhook_url=hook.url, allow_private=True)).start()
    try:
        d.put(notice(7))
        wait(lambda: len(hook.bodies) == 1)
    finally:
        d.close()
    text = "runyard: run 7 (gan): nan\nrule: message 7"
    assert hook.bodies[0] == {"text": text, "content": text, "username": "runyard",
                              "runyard": [{"run": 7, "project": "gan", "kind": "nan", "message": "rule: message 7",
                                           "time": 1007.0, "rule": "rule", "event": 7}]}


def test_ten_completions_in_one_window_make_one_digest(hook: Hook) -> None:
    clock = [0.0]
    d = Dispatcher(lambda n: NotifySettings(webhook_url=hook.url, digest=600.0, allow_private=True),
                   clock=lambda: clock[0])
    for i in range(10):
        d.put(notice(i, kind="finished"))
        clock[0] += 30.0
    assert d.deliver_due() == 0  # the window is still open: nothing sent
    d.put(notice(99, kind="failed"))  # a failure does not wait for the window
    assert d.deliver_due() == 1 and hook.bodies[-1]["runyard"][0]["kind"] == "failed"
    clock[0] = 601.0
    assert d.deliver_due() == 1
    digest = hook.bodies[-1]
    assert digest["text"].startswith("runyard: 10 runs finished") and len(digest["runyard"]) == 10
    assert d.deliver_due() == 0 and len(hook.bodies) == 2


def test_quiet_hours_hold_routine_news_but_not_alerts(hook: Hook) -> None:
    now = time.mktime((2026, 11, 22, 23, 30, 0, 0, 0, -1))
    quiet = NotifySettings(webhook_url=hook.url, digest=0.001, allow_private=True, quiet=(22 * 60, 7 * 60))
    assert in_quiet_hours(quiet.quiet, now) and not in_quiet_hours(quiet.quiet, now + 9 * 3600)
    clock = [now]
    d = Dispatcher(lambda n: quiet, clock=lambda: clock[0])
    d.put(notice(1, kind="finished"))
    d.put(notice(2, kind="nan"))
    clock[0] += 1
    assert d.deliver_due() == 1 and [b["runyard"][0]["kind"] for b in hook.bodies] == ["nan"]
    clock[0] = now + 8 * 3600  # 07:30: the night is over
    assert d.deliver_due() == 1 and hook.bodies[-1]["runyard"][0]["kind"] == "finished"


def test_a_failing_webhook_is_retried_until_it_takes_the_message() -> None:
    dead = Hook(statuses=[500, 503])
    clock = [0.0]
    d = Dispatcher(lambda n: NotifySettings(webhook_url=dead.url, allow_private=True), clock=lambda: clock[0])
    try:
        d.put(notice(1))
        assert d.deliver_due() == 0 and d.pending() == 1  # 500: kept
        clock[0] += 1.0
        assert d.deliver_due() == 0  # 503: kept, the next try 2 s later
        clock[0] += 1.0
        assert d.deliver_due() == 0 and d.pending() == 1  # not due yet
        clock[0] += 1.0
        assert d.deliver_due() == 1 and d.pending() == 0 and len(dead.bodies) == 1
    finally:
        dead.close()


def test_a_message_being_sent_still_counts_as_pending() -> None:
    # A slow webhook: while its delivery is under way the message is neither queued nor delivered,
    # and pending() (what `runyard doctor` and the alerts benchmark report) must not say 0.
    sending, release = threading.Event(), threading.Event()

    def slow(settings: Any, title: str, lines: list[str], notices: list[Notice]) -> None:
        sending.set()
        release.wait(10)

    d = Dispatcher(lambda n: NotifySettings(webhook_url="http://127.0.0.1:9/"), senders={"webhook": slow})
    d.put(notice(1))
    worker = threading.Thread(target=d.deliver_due)
    worker.start()
    try:
        assert sending.wait(10)
        assert d.pending() == 1
    finally:
        release.set()
        worker.join(10)
    assert d.pending() == 0


def test_email_reaches_a_real_smtp_server() -> None:
    pytest.importorskip("aiosmtpd")
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Message

    received: list[Any] = []

    class Keep(Message):
        def handle_message(self, message: Any) -> None:
            received.append(message)

    from tests.unit.server.conftest import free_port

    controller = Controller(Keep(), hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        email = {"host": "127.0.0.1", "port": controller.port, "from": "yard@example.com", "to": ["me@example.com"]}
        d = Dispatcher(lambda n: NotifySettings(email=email)).start()
        d.put(notice(3, channels=("email",)))
        wait(lambda: len(received) == 1)
        d.close()
    finally:
        controller.stop()
    message = received[0]
    assert message["Subject"] == "runyard: run 3 (gan): nan" and message["To"] == "me@example.com"
    assert message.get_payload().strip() == "rule: message 3"


def _nan_batch(i: int) -> IngestBatch:
    steps = np.array([i], dtype=np.int64)
    return IngestBatch("x", "w", i, i, points={"loss": Points.of(steps, steps * 1.0, np.array([np.nan]))})


def test_ingest_never_waits_for_a_hanging_webhook(store: SqlStore) -> None:
    from runyard.ingest.alerting import Outbox, Watcher

    stuck = Hook(block=True)  # accepts the connection, never answers until released
    try:
        outbox = Outbox(store, Dispatcher(lambda n: NotifySettings(webhook_url=stuck.url, allow_private=True)),
                        stop=lambda n, why: None)
        outbox.start(interval=0.01)
        watcher = Watcher(store)
        store.add_alert_rule(AlertRule("any-nan", "nan", {"cooldown": 0.0}, notify=("inbox", "webhook")))
        number = store.create_run(NewRun(project="p", status=RunStatus.RUNNING)).number
        done = threading.Event()

        def ingest() -> None:
            for i in range(50):
                watcher.after_ingest(number, _nan_batch(i))
                time.sleep(0.005)  # the outbox hands notices over meanwhile
            done.set()

        threading.Thread(target=ingest, daemon=True).start()
        assert done.wait(30), "ingest waited for the webhook"
        assert len(store.list_alert_events(run=number)) == 50  # every alert is in the inbox already
        wait(lambda: outbox.dispatcher.pending() > 0)  # and the outbox is trying to deliver them
        assert not stuck.bodies  # the webhook has answered nothing yet
        outbox.close()
    finally:
        stuck.close()


def test_alerts_recorded_by_a_process_that_is_gone_are_acted_on_once(store: SqlStore, hook: Hook) -> None:
    from runyard.ingest.alerting import Outbox, Watcher

    store.add_alert_rule(AlertRule("stop-nan", "nan", {}, action="stop", notify=("inbox", "webhook")))
    number = store.create_run(NewRun(project="p", status=RunStatus.RUNNING)).number
    Watcher(store).after_ingest(number, _nan_batch(0))  # e.g. `runyard sync`, which then exits
    stopped: list[int] = []

    def make() -> Outbox:
        dispatcher = Dispatcher(lambda n: NotifySettings(webhook_url=hook.url, allow_private=True))
        return Outbox(store, dispatcher, stop=lambda n, why: stopped.append(n))

    first = make()
    assert first.poll() == 1 and stopped == [number]
    first.dispatcher.drain(timeout=10)
    assert len(hook.bodies) == 1 and hook.bodies[0]["runyard"][0]["rule"] == "stop-nan"
    delivery = store.list_alert_events(run=number)[0].delivery
    assert delivery["pending"] == [] and delivery["done"] is True and "webhook" in delivery["delivered"]
    second = make()  # the next agent: nothing left to do
    second.poll()
    second.dispatcher.drain(timeout=1)
    assert stopped == [number] and len(hook.bodies) == 1


def test_a_rule_added_between_two_batches_applies_to_the_next_one(store: SqlStore) -> None:
    from runyard.ingest.alerting import Watcher

    watcher = Watcher(store)
    number = store.create_run(NewRun(project="p", status=RunStatus.RUNNING)).number
    assert watcher.after_ingest(number, _nan_batch(0)) == []  # no rule yet
    store.add_alert_rule(AlertRule("any-nan", "nan", {}))
    assert [f.step for f in watcher.after_ingest(number, _nan_batch(1))] == [1]
