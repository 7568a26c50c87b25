"""The Watcher keeps what rules remember in the store; the Outbox acts only while it holds the lease."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tests.flow.test_execution import wait_for

from runyard.alerts.dispatch import Dispatcher, Notice
from runyard.alerts.rules import check
from runyard.ingest.alerting import Outbox, Watcher
from runyard.store.api import IngestBatch
from runyard.store.newrun import NewRun
from runyard.store.series import Points
from runyard.store.sql import SqlStore
from runyard.types import RunStatus


def batch(run_id: str, key: str, steps: list[int], values: list[float]) -> IngestBatch:
    s = np.asarray(steps, dtype=np.int64)
    b = IngestBatch(run_id, "w", steps[0], steps[-1])
    b.points = {key: Points.of(s, s.astype(np.float64), np.asarray(values, dtype=np.float64))}
    return b


def test_two_watchers_on_one_store_remember_together(store: SqlStore) -> None:
    store.add_alert_rule(check({"name": "acc-drop", "when": "drop", "metric": "acc", "by": 0.2}, "test"))
    store.add_alert_rule(check({"name": "acc-low", "when": "below", "metric": "acc", "value": 0.1}, "test"))
    run = store.create_run(NewRun(project="p", status=RunStatus.RUNNING))
    first, second = Watcher(store), Watcher(store)
    assert first.after_ingest(run.number, batch(run.id, "acc", [0, 1], [0.5, 0.9])) == []
    # The second has never seen this run: it reads the best value (0.9) the first recorded.
    fired = second.after_ingest(run.number, batch(run.id, "acc", [2], [0.6]))
    assert [f.message for f in fired] == ["acc-drop: acc = 0.6 at step 2, more than 0.2 below its best 0.9 (step 1)"]
    # Both have now evaluated the run; each must see the other's changes (cooldowns) all the same.
    assert [f.rule.name for f in first.after_ingest(run.number, batch(run.id, "acc", [3], [0.05]))] == ["acc-low"]
    assert second.after_ingest(run.number, batch(run.id, "acc", [4], [0.01])) == []
    assert first.after_ingest(run.number, batch(run.id, "acc", [5], [0.2])) == []
    assert [(e.kind, e.step) for e in store.list_alert_events(run.number)] == [("drop", 2), ("below", 3)]
    assert Watcher(store).after_ingest(run.number, batch(run.id, "acc", [6], [0.0])) == []  # a restart


def test_only_the_outbox_holding_the_lease_acts(store: SqlStore) -> None:
    store.add_alert_rule(check({"name": "low", "when": "below", "metric": "acc", "value": 0.1,
                                "notify": ["inbox", "webhook"]}, "test"))
    run = store.create_run(NewRun(project="p", status=RunStatus.RUNNING))
    Watcher(store).after_ingest(run.number, batch(run.id, "acc", [0], [0.0]))
    sent: list[tuple[str, int]] = []

    def outbox(name: str) -> Outbox:
        def send(settings: object, title: str, lines: list[str], notices: list[Notice]) -> None:
            sent.extend((name, n.event_id) for n in notices)

        return Outbox(store, Dispatcher(senders={"webhook": send}), lambda number, why: None, holder=name, lease=30)

    a, b = outbox("a"), outbox("b")
    assert a.poll() == 1 and b.poll() == 0
    assert a.dispatcher.deliver_due() == 1 and b.dispatcher.deliver_due() == 0
    assert [name for name, _ in sent] == ["a"]
    assert store.list_alert_events()[0].delivery["pending"] == []
    a.close()  # handed over at once: b takes it when it next asks (within a second)
    wait_for(lambda: b.poll() == 1, 10, "b to take the outbox over")
    assert b.dispatcher.deliver_due() == 0  # b looked at the same event: nothing was left to do
    assert [name for name, _ in sent] == ["a"]


def test_an_alert_is_delivered_by_an_outbox_with_the_notify_settings_of_where_it_fired(
        store: SqlStore, tmp_path: Path) -> None:
    # A team's servers share one [notify] (the team's chat); a teammate's agent writing to the same
    # database has its own (an email to her). Whoever holds a lease, each alert goes out once, with
    # the settings of the process that fired it: never the servers' alerts to her, nor hers to the chat.
    from runyard.alerts.dispatch import sender_of

    team, alice, bare = tmp_path / "team.toml", tmp_path / "alice.toml", tmp_path / "bare.toml"
    team.write_text('[notify.webhook]\nurl = "https://chat.example.org/hooks/runyard"\n')
    alice.write_text('[notify.email]\nhost = "smtp.example.org"\nto = "alice@example.org"\n')
    bare.write_text('db = "sqlite:///x.db"\n')
    groups = {name: sender_of(path) for name, path in (("team", team), ("alice", alice), ("bare", bare))}
    assert groups["bare"] == "" and len({groups["team"], groups["alice"], ""}) == 3
    assert sender_of(team) == groups["team"]  # the same settings on every server: one group

    store.add_alert_rule(check({"name": "low", "when": "below", "metric": "acc", "value": 0.1,
                                "notify": ["inbox", "webhook"]}, "test"))
    on_server = store.create_run(NewRun(project="p", status=RunStatus.RUNNING))
    on_laptop = store.create_run(NewRun(project="p", status=RunStatus.RUNNING))
    Watcher(store, sender=groups["team"]).after_ingest(on_server.number, batch(on_server.id, "acc", [0], [0.0]))
    Watcher(store, sender=lambda: groups["alice"]).after_ingest(
        on_laptop.number, batch(on_laptop.id, "acc", [0], [0.0]))
    sent: list[tuple[str, int]] = []

    def outbox(name: str, sender: str) -> Outbox:
        def send(settings: object, title: str, lines: list[str], notices: list[Notice]) -> None:
            sent.extend((name, n.run) for n in notices)

        return Outbox(store, Dispatcher(senders={"webhook": send}), lambda number, why: None, holder=name,
                      lease=30, sender=sender)

    # Her agent polls first, then both servers, then an agent with no [notify] at all.
    outboxes = [outbox("alice", groups["alice"]), outbox("server-a", groups["team"]),
                outbox("server-b", groups["team"]), outbox("bare", "")]
    assert [o.poll() for o in outboxes] == [1, 1, 0, 0]
    for o in outboxes:
        o.dispatcher.deliver_due()
    assert sorted(sent) == [("alice", on_laptop.number), ("server-a", on_server.number)]

    for o in outboxes:
        o.close()
    # A rule that stops the run fired in a group none of whose members is alive now (its [notify]
    # was changed and its processes restarted): another group's outbox stops the run all the same.
    store.add_alert_rule(check({"name": "nan", "when": "nan", "metric": "loss", "action": "stop"}, "test"))
    nan_run = store.create_run(NewRun(project="p", status=RunStatus.RUNNING))
    Watcher(store, sender="a-group-gone").after_ingest(nan_run.number, batch(nan_run.id, "loss", [0], [float("nan")]))
    stopped: list[int] = []
    survivor = Outbox(store, Dispatcher(senders={}), lambda number, why: stopped.append(number), holder="s",
                      lease=30, sender=groups["team"])
    survivor.poll()
    assert stopped == [nan_run.number]
    survivor.poll()
    assert stopped == [nan_run.number]  # once
