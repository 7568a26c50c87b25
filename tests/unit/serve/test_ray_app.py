"""Where the driver of ``runyard serve --on ray`` connects, and how replicas' requests are counted
(``serve/ray_app.py``), without a cluster: Ray itself is never imported here."""

from __future__ import annotations

import pytest

from runyard.errors import ConfigError
from runyard.serve.ray_app import Forwarder, StatsSink, driver_address


def test_ray_address_names_the_cluster_unless_it_is_a_dashboard(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    assert driver_address("http://head:8265") == "ray://head:10001"
    monkeypatch.setenv("RAY_ADDRESS", "http://head:8265")  # what the Jobs CLI reads: not a driver's address
    assert driver_address("10.0.0.5:6379") == "10.0.0.5:6379"
    assert driver_address("auto") == "auto"


def test_a_dashboard_address_needs_its_head_on_this_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(ConfigError, match="RUNYARD_RAY"):
        driver_address(None)
    with pytest.raises(ConfigError, match="no Ray head on this machine has its dashboard on port 1"):
        driver_address("http://127.0.0.1:1")


def test_the_sink_counts_every_replicas_requests_as_one_server() -> None:
    sink = StatsSink()
    sink.record([(0.010, 200), (0.020, 200)])
    sink.record([(0.030, 500), (0.001, 422)])
    sink.loaded("a", None)
    sink.loaded("b", "RuntimeError: corrupt")
    metrics = sink.flush()
    assert (metrics["serve/requests"], metrics["serve/errors"], metrics["serve/rejected"]) == (4, 1, 1)
    assert metrics["serve/latency_p50_ms"] == pytest.approx(20.0)
    assert sink.replicas() == {"a": None, "b": "RuntimeError: corrupt"}


def test_a_replica_keeps_its_requests_until_they_are_sent() -> None:
    forwarder = Forwarder("digits", every=60)
    forwarder.record(0.01, 200)
    forwarder.record(0.02, 500)
    assert forwarder._pending == [(0.01, 200), (0.02, 500)]
    assert forwarder.total_requests == 0  # counted by the sink, not the replica
