"""The HTTP API against both engines: what a client reads and changes."""

from __future__ import annotations

import math

import msgpack
import numpy as np
from tests.unit.server.conftest import Served

from runyard.store.api import NewRun, RunPatch
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


def test_runs_are_listed_by_kind_through_the_server(api: Served) -> None:
    from runyard.client import RemoteStore
    from runyard.store.api import RunQuery
    from runyard.types import RunKind

    script = _seed(api)
    lab = api.store.create_run(NewRun(project="gan", name="lab", status=RunStatus.RUNNING,
                                      kind=RunKind.JUPYTERLAB)).number
    listed = api.client.get("/api/v1/runs", params={"kind": "jupyterlab"}).json()
    assert [r["number"] for r in listed["items"]] == [lab]
    both = api.client.get("/api/v1/runs", params={"kind": ["jupyterlab", "script"]}).json()
    assert sorted(r["number"] for r in both["items"]) == sorted([script, lab])
    assert api.client.get("/api/v1/runs", params={"kind": "serve-me"}).status_code in (400, 422)

    class Through:  # RemoteStore's client: its GETs go to the served API
        def get(self, path: str, **kwargs: object) -> object:
            return api.client.get(f"/api/v1{path}", **kwargs).json()  # type: ignore[arg-type]

    remote = RemoteStore(Through()).list_runs(RunQuery(kinds=[RunKind.JUPYTERLAB]))  # type: ignore[arg-type]
    assert [r.number for r in remote.items] == [lab]


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
    assert as_json["value"] == ["NaN"]  # the documented form (README: NaN and infinities in JSON)


def _ingest_body(run_id: str, items: list) -> bytes:  # type: ignore[type-arg]
    import zlib

    return zlib.compress(msgpack.packb({"run_id": run_id, "writer": "w1", "items": items}), 1)


def _start(seq: int = 0) -> list:  # type: ignore[type-arg]
    return [seq, "e", 1.0, {"event": "start", "project": "p", "name": "shipped", "config": {}, "labels": [],
                            "notes": "", "command": [], "host": "h", "environment": {}}]


INGEST_HEADERS = {"content-type": "application/msgpack", "content-encoding": "deflate"}


def test_ingest_trusts_no_artifact_name_or_size_from_the_client(api: Served) -> None:
    run_id = "01HZZZZZZZZZZZZZZZZZZZZZZZ"
    blob = api.opened.artifacts.put_bytes(b"eleven byte")
    escape = _ingest_body(run_id, [_start(), [1, "a", 1.0, "x.txt", 5, "../../../../etc/passwd", "sha256:x"]])
    refused = api.client.post("/api/v1/ingest", content=escape, headers=INGEST_HEADERS)
    assert refused.status_code == 400 and "SHA-256" in refused.json()["error"]
    lying = _ingest_body(run_id, [_start(), [1, "a", 1.0, "x.txt", 1000, blob.sha256, "sha256:whatever"]])
    assert api.client.post("/api/v1/ingest", content=lying, headers=INGEST_HEADERS).status_code == 200
    listed = api.client.get(f"/api/v1/runs/{run_id}/artifacts").json()
    assert listed[0]["size"] == 11 and listed[0]["content_ref"] == blob.content_ref
    got = api.client.get(f"/api/v1/runs/{run_id}/artifacts/x.txt")
    assert got.content == b"eleven byte" and got.headers["content-length"] == "11"


def test_a_body_past_the_limit_is_refused_before_it_fills_memory(api: Served) -> None:
    def chunks():  # type: ignore[no-untyped-def]  # no Content-Length: the size is learnt while reading
        for _ in range(65):
            yield b"\0" * (1 << 20)

    refused = api.client.post("/api/v1/ingest", content=chunks(), headers=INGEST_HEADERS)
    assert refused.status_code == 413 and "MiB" in refused.json()["error"]


def test_a_reader_sees_which_env_variables_a_run_had_but_not_their_values(api: Served) -> None:
    from runyard.store.tokens import Tokens

    api.store.create_run(NewRun(project="p", name="secret", status=RunStatus.QUEUED,
                                launch={"argv": ["true"], "env": {"API_KEY": "s3cr3t"},
                                        "notify": {"webhook": {"url": "https://hooks.example.com/T0/s3cr3t"}}}))
    _, reader = Tokens(api.store).create("reader")
    _, writer = Tokens(api.store).create("writer")
    as_reader = api.client.get("/api/v1/runs/secret", headers={"authorization": f"Bearer {reader}"})
    assert as_reader.json()["launch"]["env"] == {"API_KEY": "(hidden)"} and "s3cr3t" not in as_reader.text
    assert as_reader.json()["launch"]["notify"] == "(hidden)"  # a webhook URL is a secret as well
    listed = api.client.get("/api/v1/runs", headers={"authorization": f"Bearer {reader}"})
    assert "s3cr3t" not in listed.text
    as_writer = api.client.get("/api/v1/runs/secret", headers={"authorization": f"Bearer {writer}"})
    assert as_writer.json()["launch"]["env"] == {"API_KEY": "s3cr3t"}


def test_a_project_token_cannot_launch_and_requirements_cannot_name_server_files(api: Served) -> None:
    from runyard.store.tokens import Tokens

    _, scoped = Tokens(api.store).create("writer", project="p")
    _, writer = Tokens(api.store).create("writer")
    body = {"command": ["true"], "snapshot": "sha256:" + "0" * 64}
    launched = api.client.post("/api/v1/runs", json=body, headers={"authorization": f"Bearer {scoped}"})
    assert launched.status_code == 403 and "without --project" in launched.json()["error"]
    for line in ("-r /etc/passwd", "file:///etc/passwd", "pkg @ https://evil.example/x.whl"):
        refused = api.client.post("/api/v1/runs", json={**body, "requirements": line},
                                  headers={"authorization": f"Bearer {writer}"})
        assert refused.status_code == 400, line


def test_a_compact_listing_of_ten_thousand_runs_leaves_out_what_a_table_does_not_show(api: Served) -> None:
    number = _seed(api)
    api.store.update_run(number, RunPatch(notes="long notes"))
    full = api.client.get("/api/v1/runs", params={"project": "gan"}).json()["items"][0]
    compact = api.client.get("/api/v1/runs", params={"project": "gan", "compact": "true", "limit": 10_000}).json()
    row = compact["items"][0]
    assert full["notes"] == "long notes" and row["notes"] == "" and row["environment"] == {} and row["launch"] is None
    assert row["config"] == {"lr": 0.1} and row["labels"] == ["a"] and row["status"] == "running"
    assert api.client.get("/api/v1/runs", params={"limit": 10_001}).status_code == 400


def test_the_uncommitted_diff_of_a_run_is_served_as_text(api: Served) -> None:
    number = _seed(api)
    assert api.client.get(f"/api/v1/runs/{number}/diff").status_code == 404  # none recorded
    blob = api.opened.artifacts.put_bytes(b"--- a/train.py\n+++ b/train.py\n+lr = 0.5\n")
    with api.store.engine.begin() as conn:
        from runyard.store.schema import runs

        conn.execute(runs.update().where(runs.c.number == number).values(git_diff_ref=blob.content_ref))
    diff = api.client.get(f"/api/v1/runs/{number}/diff")
    assert diff.status_code == 200 and diff.text.endswith("+lr = 0.5\n")
    assert diff.headers["content-type"].startswith("text/plain")


def test_every_dashboard_page_is_the_same_shell_and_assets_cannot_leave_their_folder(api: Served) -> None:
    from runyard.server import ui

    pages = [api.client.get(path) for path in ("/", "/projects/gan", "/runs/1", "/compare?runs=1,2")]
    assert all(p.status_code == 200 and p.headers["content-type"].startswith("text/html") for p in pages)
    assert len({p.content for p in pages}) == 1
    built = (ui.STATIC / "index.html").exists()
    assert (b"make ui" in pages[0].content) != built  # the built app, or how to build it
    for name in ("..%2F..%2Fconfig.py", ".hidden", "%2Fetc%2Fpasswd", "missing.js"):
        assert api.client.get(f"/assets/{name}").status_code == 404
    assert api.client.get("/nothing-here").status_code == 404


def test_alerts_are_listed_by_scope_and_marked_seen(api: Served) -> None:
    from runyard.store.api import AlertEvent
    from runyard.store.tokens import Tokens

    mine = api.store.create_run(NewRun(project="gan", name="mine")).number
    theirs = api.store.create_run(NewRun(project="other", name="theirs")).number
    for number in (mine, theirs):
        api.store.add_alert_event(AlertEvent(number, "nan", f"loss is nan in {number}", 1.0,
                                             delivery={"pending": ["webhook"]}))
    _, scoped = Tokens(api.store).create("writer", "gan-writer", "gan")
    _, admin = Tokens(api.store).create("admin", "admin")
    headers, everything = {"authorization": f"Bearer {scoped}"}, {"authorization": f"Bearer {admin}"}
    listed = api.client.get("/api/v1/alerts", params={"unseen": True}, headers=headers).json()
    assert [a["run"] for a in listed] == [mine] and "delivery" not in listed[0]
    others = [a["id"] for a in api.client.get("/api/v1/alerts", params={"run": "theirs"}, headers=everything).json()]
    assert api.client.post("/api/v1/alerts/seen", json={"ids": others}, headers=headers).json() == {"marked": 0}
    assert api.client.post("/api/v1/alerts/seen", json={"ids": [listed[0]["id"]]}, headers=headers).json() == \
        {"marked": 1}
    unseen = api.client.get("/api/v1/alerts", params={"unseen": True}, headers=everything).json()
    assert [a["run"] for a in unseen] == [theirs]
