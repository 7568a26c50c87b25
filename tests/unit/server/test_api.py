"""The HTTP API against both engines: what a client reads and changes."""

from __future__ import annotations

import math

import msgpack
import numpy as np
from tests.unit.server.conftest import Served

from runyard.store.api import NewRun
from runyard.store.series import Points
from runyard.types import RunStatus


def _seed(api: Served) -> int:
    store = api.store
    run = store.create_run(NewRun(project="gan", name="baseline", status=RunStatus.RUNNING, config={"lr": 0.1},
                                  labels=["a"]))
    steps = np.arange(3000, dtype=np.int64)
    values = np.linspace(1.0, 0.0, 3000)
    values[1337] = math.nan
    store.append_points(run.number, {"loss": Points.of(steps, steps * 1.0, values)})
    return run.number


def test_runs_list_get_and_patch(api: Served) -> None:
    number = _seed(api)
    listed = api.client.get("/api/v1/runs", params={"project": "gan", "label": "a"}).json()
    assert [r["number"] for r in listed["items"]] == [number]
    got = api.client.get("/api/v1/runs/baseline").json()
    assert got["config"] == {"lr": 0.1} and got["status"] == "running"
    changed = api.client.patch(f"/api/v1/runs/{number}", json={"add_labels": ["best"], "append_note": "**good**",
                                                               "name": "renamed"}).json()
    assert changed["labels"] == ["a", "best"] and changed["name"] == "renamed" and "**good**" in changed["notes"]
    missing = api.client.get("/api/v1/runs/9999")
    assert missing.status_code == 404 and missing.json()["error"] == "no run number 9999"


def test_metrics_envelope_and_points_keep_nan(api: Served) -> None:
    number = _seed(api)
    series = api.client.get(f"/api/v1/runs/{number}/metrics").json()
    assert series[0]["key"] == "loss" and series[0]["count"] == 3000
    env = api.client.get(f"/api/v1/runs/{number}/metrics/loss", params={"buckets": 3}).json()
    assert sum(env["count"]) == 3000 and sum(env["nan_count"]) == 1 and len(env["count"]) <= 3
    assert env["max"][0] == 1.0 and env["last"][-1] == 0.0
    raw = api.client.get(f"/api/v1/runs/{number}/points/loss", params={"start": 1336, "end": 1338},
                         headers={"accept": "application/msgpack"})
    pts = msgpack.unpackb(raw.content)
    values = np.frombuffer(pts["value"], "<f8")
    assert np.frombuffer(pts["step"], "<i8").tolist() == [1336, 1337, 1338] and math.isnan(values[1])
    as_json = api.client.get(f"/api/v1/runs/{number}/points/loss", params={"start": 1337, "end": 1337}).json()
    assert as_json["value"] == [{"$float": "NaN"}]
