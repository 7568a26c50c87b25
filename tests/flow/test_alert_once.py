"""An alert is said once per cooldown, whoever evaluates it: across an agent's restart, and with two
ingesters (two servers) on one PostgreSQL database; and delivered once, by whichever server holds the
outbox lease, when the one that held it dies. Real processes, a loopback webhook."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.flow.test_execution import RUNYARD, wait_for
from tests.unit.alerts.test_dispatch import Hook
from tests.unit.server.conftest import LiveServer

from runyard import wire
from runyard.agent import stop_agents
from runyard.config import resolve
from runyard.store.engine import create_engine
from runyard.store.migrate import upgrade
from runyard.store.sql import SqlStore

pytestmark = pytest.mark.timeout(120)

# Phase one trips "acc-low" (cooldown: the default hour); phase two, after $GATE appears, trips it
# again within the cooldown, then trips "marker": when the marker's notice has arrived, so has any
# second "acc-low" (the inbox and the webhook keep the order alerts fired in).
SCRIPT = """
import os, pathlib, time, runyard
run = runyard.init(project="once")
for step in range(10):
    run.log({"acc": 0.05}, step=step)
gate = pathlib.Path(os.environ["GATE"])
while not gate.exists():
    time.sleep(0.05)
for step in range(10, 20):
    run.log({"acc": 0.05}, step=step)
run.log({"marker": 1.0}, step=20)
run.finish()
"""


def cli(env: dict[str, str], *args: str) -> str:
    result = subprocess.run([*RUNYARD, *args], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def add_rules(env: dict[str, str]) -> None:
    cli(env, "alert", "add", "--name", "acc-low", "--when", "below", "--metric", "acc", "--value", "0.1",
        "--notify", "inbox,webhook")
    cli(env, "alert", "add", "--name", "marker", "--when", "above", "--metric", "marker", "--value", "0.5",
        "--notify", "inbox,webhook")


def kinds(hook: Hook) -> list[str]:
    return [n["kind"] for body in hook.bodies for n in body["runyard"]]


def test_an_agent_restarted_mid_run_does_not_say_an_alert_again(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")}, "RUNYARD_HOME": str(home),
           "RUNYARD_SYSTEM_INTERVAL": "0", "GATE": str(tmp_path / "gate")}
    hook = Hook()
    try:
        home.mkdir()
        (home / "config.toml").write_text(f'[notify]\nallow_private = true\n[notify.webhook]\nurl = "{hook.url}"\n')
        add_rules(env)
        (tmp_path / "train.py").write_text(textwrap.dedent(SCRIPT))
        script = subprocess.Popen([sys.executable, str(tmp_path / "train.py")], env=env, cwd=tmp_path,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        store = SqlStore(create_engine(resolve(environ=env, cwd=tmp_path).db))

        def delivered() -> bool:
            events = store.list_alert_events()
            return len(events) == 1 and events[0].delivery.get("pending") == []

        wait_for(delivered, 60, "the first alert to be delivered and recorded")
        stop_agents(home)  # the agent goes away mid-run, with what it remembered of the rules
        (tmp_path / "gate").touch()  # the script logs on; finish() starts a new agent
        assert script.wait(90) == 0, script.stdout.read().decode() if script.stdout else ""
        wait_for(lambda: "above" in kinds(hook), 60, "the marker's notice")
        events = store.list_alert_events()
        store.close()
        assert [(e.kind, e.step) for e in events] == [("below", 0), ("above", 20)], f"webhook got {kinds(hook)}"
        assert kinds(hook) == ["below", "above"]
    finally:
        (tmp_path / "gate").touch()
        stop_agents(home)
        hook.close()


def post(url: str, run_id: str, items: list[Any]) -> None:
    response = httpx.post(f"{url}/api/v1/ingest", content=wire.deflate(wire.pack_ingest(run_id, "w", items)),
                          headers={"content-type": wire.MSGPACK, "content-encoding": wire.ENCODING_DEFLATE},
                          timeout=30)
    response.raise_for_status()


def points(key: str, value: float, steps: range) -> list[dict[str, Any]]:
    now = time.time()
    return [{key: value, "\x00": step + 1, "\x01": now, "\x02": step} for step in steps]


def start_with_rules(servers: list[LiveServer], db_url: str, hook: Hook, config: str = "") -> None:
    """Start ``servers`` on one database, each delivering to ``hook``, and add the alert rules."""
    for server in servers:
        server.home.mkdir(parents=True)
        (server.home / "config.toml").write_text(f'{config}[notify]\nallow_private = true\n'
                                                 f'[notify.webhook]\nurl = "{hook.url}"\n')
        server.start()
    add_rules({**{k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")},
               "RUNYARD_HOME": str(servers[0].home), "RUNYARD_DB": db_url})


def start_record() -> list[Any]:
    """The start event of the run the servers are sent points of, as the SDK writes it."""
    return [0, "e", time.time(), {"event": "start", "project": "once", "name": "shared", "config": {},
                                  "labels": [], "notes": "", "command": [], "host": "h", "environment": {}}]


@pytest.mark.postgres
def test_two_servers_on_one_database_say_an_alert_once(pg_schema_url: str, tmp_path: Path) -> None:
    from runyard.ids import new_ulid

    engine = create_engine(pg_schema_url)
    upgrade(engine)
    hook = Hook()
    servers = [LiveServer(tmp_path / f"server-{i}", pg_schema_url) for i in (1, 2)]
    try:
        start_with_rules(servers, pg_schema_url, hook)
        run_id = new_ulid()
        start = start_record()
        first, second = servers[0].url, servers[1].url
        post(first, run_id, [start, *points("acc", 0.05, range(0, 10))])  # the first server says it
        wait_for(lambda: "below" in kinds(hook), 30, "the first alert's notice")
        post(second, run_id, points("acc", 0.05, range(10, 20)))  # the second must remember it was said
        post(second, run_id, [{"marker": 1.0, "\x00": 21, "\x01": time.time(), "\x02": 20}])
        wait_for(lambda: "above" in kinds(hook), 30, "the marker's notice")
        store = SqlStore(engine)
        events = store.list_alert_events()
        store.close()
        assert [(e.kind, e.step) for e in events] == [("below", 0), ("above", 20)], f"webhook got {kinds(hook)}"
        assert kinds(hook) == ["below", "above"], json.dumps(hook.bodies)[:2000]
    finally:
        for server in servers:
            server.kill()
        hook.close()
        engine.dispose()


@pytest.mark.postgres
def test_when_the_server_holding_the_outbox_dies_its_alert_is_delivered_once_by_another(pg_schema_url: str,
                                                                                    tmp_path: Path) -> None:
    from runyard.ids import new_ulid

    engine = create_engine(pg_schema_url)
    upgrade(engine)
    store = SqlStore(engine)
    hook = Hook(statuses=[503] * 1000)  # down at first: the outbox's holder can only retry
    servers = [LiveServer(tmp_path / f"server-{i}", pg_schema_url) for i in (1, 2)]
    try:
        start_with_rules(servers, pg_schema_url, hook, 'lease = "3"\n')
        start = start_record()
        post(servers[0].url, new_ulid(), [start, *points("acc", 0.05, range(0, 10))])
        wait_for(lambda: len(hook.statuses) < 1000, 30, "a first attempt to deliver the alert")
        [(lease, _)] = store.leases("outbox")
        dead = lease.info.get("pid")
        [holder] = [s for s in servers if s.process is not None and s.process.pid == dead]
        holder.kill()  # SIGKILL: the lease is not given up, it lapses; the notice was never delivered
        holder.start()  # restarted, as a service manager would: two outboxes again, each may take the lease
        hook.statuses.clear()  # the webhook is back
        wait_for(lambda: kinds(hook) == ["below"], 30, "an outbox to take the lease over and deliver")
        time.sleep(4)  # more than a lease: a second outbox acting would have delivered it again by now
        assert kinds(hook) == ["below"], json.dumps(hook.bodies)[:2000]
        [event] = store.list_alert_events()
        assert event.delivery.get("pending") == [] and "webhook" in event.delivery.get("delivered", {})
        [(lease, _)] = store.leases("outbox")
        assert lease.info.get("pid") not in (None, dead)  # a live server holds it now
    finally:
        for server in servers:
            server.kill()
        hook.close()
        store.close()
