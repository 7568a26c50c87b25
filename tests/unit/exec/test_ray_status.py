"""Reading a Ray cluster's status (the dashboard's ``/api/cluster_status``, as Ray 2.x sends it)
into the machine the agent schedules Ray runs against."""

from __future__ import annotations

import pytest

from runyard.errors import ConfigError
from runyard.exec.ray import machine_of
from runyard.exec.scheduler import Need

GIB = 1 << 30


def _status(nodes: dict[str, dict[str, list[float]]], at: float = 1796127799.93) -> dict[str, object]:
    usage: dict[str, list[float]] = {}
    for node in nodes.values():
        for name, (used, total) in node.items():
            before = usage.get(name, [0.0, 0.0])
            usage[name] = [before[0] + used, before[1] + total]
    return {"time": at, "loadMetricsReport": {"usage": usage, "usageByNode": nodes, "nodeTypes": []}}


def test_a_two_node_cluster_is_read_with_its_nodes_and_what_is_in_use() -> None:
    status = _status({
        "c95df8bd": {"CPU": [1.0, 4.0], "GPU": [1.0, 2.0], "memory": [0.0, 16.0 * GIB],
                     "node:InternalHead": [0.0, 1.0]},
        "a1b2c3d4": {"CPU": [0.5, 8.0], "GPU": [0.0, 2.0], "memory": [2.0 * GIB, 32.0 * GIB]},
    })
    machine = machine_of("ray http://head:8265", status)
    assert (machine.gpus, machine.cpus, machine.memory) == (4, 12, 48 * GIB)
    assert sorted(machine.nodes) == [(2, 4, 16 * GIB), (2, 8, 32 * GIB)]
    assert machine.used == (1, 2, 2 * GIB)  # a fraction in use is a whole one taken
    assert machine.measured_at == pytest.approx(1796127799.93)
    assert machine.lacks(Need(gpus=2, cpus=6)) is None
    assert "on one node" in (machine.lacks(Need(gpus=3)) or "")
    assert "on one node" in (machine.lacks(Need(cpus=9)) or "")


def test_a_head_that_has_not_reported_its_resources_yet_is_not_a_cluster() -> None:
    with pytest.raises(ConfigError, match="reports no nodes yet"):
        machine_of("ray http://head:8265", {"loadMetricsReport": {"usage": {}}})
