"""Alert webhooks go to public addresses only: loopback, private, link-local (cloud metadata) and the
like are refused before anything connects, unless the home's config says ``[notify] allow_private``."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from runyard.alerts import webhook
from runyard.alerts.dispatch import Dispatcher, Notice, NotifySettings, for_home
from runyard.store.api import AlertRule, IngestBatch
from runyard.store.newrun import NewRun
from runyard.store.series import Points
from runyard.store.sql import SqlStore
from runyard.types import RunStatus

INTERNAL = ("http://127.0.0.1:{port}/hook", "http://169.254.169.254/latest/meta-data/", "http://10.1.2.3:{port}/",
            "http://[::1]:{port}/hook", "http://[::ffff:127.0.0.1]:{port}/hook", "http://localhost:{port}/hook",
            "http://100.64.0.1/", "http://0.0.0.0:{port}/", "http://2130706433:{port}/", "http://[fd00::1]/",
            "http://[fe80::1]/", "http://224.0.0.1/", "https://127.0.0.1:{port}/hook")


class Listener:
    """A loopback socket that only counts the connections it is offered (and answers 204)."""

    def __init__(self, family: int = socket.AF_INET, address: str = "127.0.0.1", port: int = 0) -> None:
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.bind((address, port))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.requests: list[bytes] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            self.requests.append(conn.recv(65536))
            conn.sendall(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            conn.close()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    heard = Listener()
    yield heard
    heard.close()


@pytest.fixture
def connects(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every address this process tries to connect to (none may be tried for a refused webhook)."""
    tried: list[Any] = []
    real = socket.socket.connect

    def connect(self: socket.socket, address: Any) -> None:
        tried.append(address)
        real(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    return tried


def notice(n: int) -> Notice:
    return Notice(n, n, "gan", "nan", f"loss-nan: loss is NaN at step {n}", 1000.0 + n, ("webhook",), "loss-nan")


def test_a_webhook_to_an_internal_address_is_refused_and_nothing_connects(
        listener: Listener, connects: list[Any], caplog: pytest.LogCaptureFixture) -> None:
    urls = [u.format(port=listener.port) for u in INTERNAL]
    clock = [0.0]
    d = Dispatcher(lambda n: NotifySettings(webhook_url=urls[n.event_id]), clock=lambda: clock[0])
    with caplog.at_level(logging.ERROR, logger="runyard.alerts.dispatch"):
        for i in range(len(urls)):
            d.put(notice(i))
        assert d.deliver_due() == 0
    assert connects == [] and listener.connections == 0
    # Refused for good: nothing waits for a retry, even a day later.
    assert d.pending() == 0
    clock[0] += 86400.0
    assert d.deliver_due() == 0 and connects == []
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == len(urls), said
    assert all("webhook delivery refused" in line and "allow_private = true" in line for line in said), said
    assert "a link-local address" in said[1] and "a private address" in said[2]
    assert "localhost (127.0.0.1)" in said[5] and "a loopback address" in said[5]


def test_a_name_with_one_internal_answer_is_refused(monkeypatch: pytest.MonkeyPatch, connects: list[Any]) -> None:
    # A rebinding name answers with a public address and an internal one: the internal one must not be tried.
    answers = [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, 80)) for ip in ("93.184.215.14", "169.254.169.254")]
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: answers)
    with pytest.raises(webhook.AddressRefused, match=r"rebind.example \(169.254.169.254\): a link-local"):
        webhook.post_json("http://rebind.example/hook", {"text": "x"})
    assert connects == []


def test_the_request_goes_to_the_checked_address_with_the_name_as_host(monkeypatch: pytest.MonkeyPatch,
                                                                       listener: Listener) -> None:
    # Resolved once: the connection goes to the address that was checked, whatever DNS says later.
    seen: list[str] = []
    real = socket.getaddrinfo

    def once(host: str, *args: Any, **kwargs: Any) -> Any:
        seen.append(host)
        return real("127.0.0.1", *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", once)
    status = webhook.post_json(f"http://hooks.example:{listener.port}/T0", {"text": "x"}, allow_private=True)
    assert status == 204 and listener.connections == 1
    assert seen[0] == "hooks.example" and "hooks.example" not in seen[1:]  # then only the address itself
    assert f"host: hooks.example:{listener.port}\r\n".encode() in listener.requests[0].lower()


def test_allow_private_in_the_home_config_lets_a_loopback_webhook_through(listener: Listener,
                                                                          tmp_path: Path) -> None:
    home_config = tmp_path / "config.toml"
    url = f"http://127.0.0.1:{listener.port}/hook"
    # A run's project file cannot allow it: whoever launches a run writes that file.
    from_project = NotifySettings(webhook_url=url, allow_private=True)
    d = Dispatcher(for_home(home_config))
    d.put(Notice(1, 1, "gan", "nan", "m", 1.0, ("webhook",), "r", from_project))
    assert d.deliver_due() == 0 and listener.connections == 0
    home_config.write_text("[notify]\nallow_private = true\n")
    d.put(Notice(2, 2, "gan", "nan", "m", 1.0, ("webhook",), "r", from_project))
    assert d.deliver_due() == 1 and listener.connections == 1


def test_redirects_are_not_followed(connects: list[Any]) -> None:
    target = Listener()
    redirect = socket.socket()
    redirect.bind(("127.0.0.1", 0))
    redirect.listen(1)

    def answer() -> None:
        conn, _ = redirect.accept()
        conn.recv(65536)
        conn.sendall(f"HTTP/1.1 307 Temporary Redirect\r\nLocation: http://127.0.0.1:{target.port}/\r\n"
                     "Content-Length: 0\r\nConnection: close\r\n\r\n".encode())
        conn.close()

    threading.Thread(target=answer, daemon=True).start()
    try:
        settings = NotifySettings(webhook_url=f"http://127.0.0.1:{redirect.getsockname()[1]}/", allow_private=True)
        d = Dispatcher(lambda n: settings)
        d.put(notice(1))
        assert d.deliver_due() == 0 and d.pending() == 1  # a failure like any other: retried later
        assert target.connections == 0 and len(connects) == 1
    finally:
        redirect.close()
        target.close()


def test_alert_test_says_the_webhook_was_refused(tmp_path: Path, listener: Listener) -> None:
    home, project = tmp_path / "home", tmp_path / "project"
    project.mkdir()
    (project / "runyard.toml").write_text(f'[notify]\nallow_private = true\n[notify.webhook]\n'
                                          f'url = "http://localhost:{listener.port}/hook"\n')
    env = {"PATH": "/usr/bin:/bin", "RUNYARD_HOME": str(home)}
    result = subprocess.run([sys.executable, "-m", "runyard.cli.main", "alert", "test", "--channel", "webhook"],
                            env=env, cwd=project, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1, result.stderr
    assert result.stdout.startswith("webhook: FAILED: AddressRefused: refused to send the webhook to localhost")
    assert "allow_private = true" in result.stdout and listener.connections == 0


def test_each_checked_address_is_tried_in_turn(monkeypatch: pytest.MonkeyPatch, listener: Listener,
                                               connects: list[Any]) -> None:
    # As a connection by name would: nothing answers on the first address, the second takes it.
    answers = [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, listener.port)) for ip in ("127.0.0.2", "127.0.0.1")]
    real = socket.getaddrinfo
    monkeypatch.setattr(socket, "getaddrinfo",
                        lambda host, *a, **k: answers if host == "two.example" else real(host, *a, **k))
    assert webhook.post_json(f"http://two.example:{listener.port}/", {"text": "x"}, allow_private=True) == 204
    assert [address[0] for address in connects] == ["127.0.0.2", "127.0.0.1"] and listener.connections == 1
    with pytest.raises(webhook.AddressRefused, match="not a URL"):
        webhook.post_json("http://hooks.example:xx/", {"text": "x"}, allow_private=True)


def test_a_refused_webhook_is_recorded_and_not_tried_again_by_the_next_process(store: SqlStore,
                                                                              listener: Listener) -> None:
    from runyard.ingest.alerting import Outbox, Watcher

    store.add_alert_rule(AlertRule("any-nan", "nan", {}, notify=("inbox", "webhook")))
    number = store.create_run(NewRun(project="p", status=RunStatus.RUNNING)).number
    batch = IngestBatch("x", "w", 0, 0, points={"loss": Points.of(np.array([0]), np.array([0.0]),
                                                                  np.array([np.nan]))})
    Watcher(store).after_ingest(number, batch)
    settings = NotifySettings(webhook_url=f"http://127.0.0.1:{listener.port}/hook")

    def make() -> Outbox:
        return Outbox(store, Dispatcher(lambda n: settings), stop=lambda n, why: None)

    first = make()
    assert first.poll() == 1
    first.dispatcher.drain(timeout=5)
    delivery = store.list_alert_events(run=number)[0].delivery
    assert delivery["pending"] == [] and "a loopback address" in delivery["refused"]["webhook"]
    second = make()  # e.g. the agent, restarted: nothing is left to send
    second.poll()
    assert second.dispatcher.pending() == 0 and listener.connections == 0
