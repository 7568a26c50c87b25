"""Issue 14, item 4: content is read and referred to only through runs a token may read. A token
limited to project B that knows the hash of project A's content can neither attach it to a run of
its own (an artifact record, an uncommitted diff) nor download it, nor learn from ``/blobs/missing``
that the server holds it; once it uploads the bytes themselves (which proves it has them), it may.
A run reference a limited token sends is resolved among its project's runs only, so no error names
another project's runs. The SDK's own flow with a limited token keeps working."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap
import time
import zlib
from pathlib import Path
from typing import Any

import httpx
import msgpack
import pytest
from tests.unit.server.conftest import LiveServer, Served, client_env, home_env
from tests.unit.server.conftest import api as api
from tests.unit.server.conftest import live_server as live_server

from runyard.config import resolve
from runyard.exec.snapshot import manifest_of, take
from runyard.ids import new_ulid
from runyard.store.api import NewRun
from runyard.store.artifacts import sha_of_ref
from runyard.store.home import open_store
from runyard.store.tokens import Tokens
from runyard.types import RunStatus

__all__ = ["api", "live_server"]  # fixtures, imported to be used here

pytestmark = pytest.mark.timeout(180)

INGEST = {"content-type": "application/msgpack", "content-encoding": "deflate"}
OCTETS = {"content-type": "application/octet-stream"}
SECRET = b"project A's model weights: only A may read these\n"
SECRET_SHA = hashlib.sha256(SECRET).hexdigest()


def bearer(secret: str) -> dict[str, str]:
    return {"authorization": f"Bearer {secret}"}


def tokens(api: Served) -> tuple[dict[str, str], dict[str, str]]:
    """(a writer token limited to project b, an unlimited admin token)."""
    made = Tokens(api.store)
    _, b_writer = made.create("writer", "b-writer", project="b")
    _, admin = made.create("admin", "admin")
    api.client.app.state.policy.tokens_check_interval = 0
    return bearer(b_writer), bearer(admin)


def a_run_holding(api: Served, data: bytes, path: str = "model.bin", name: str = "a-run") -> int:
    """A run of project a with ``data`` as its artifact ``path``."""
    number = api.store.create_run(NewRun(project="a", name=name, status=RunStatus.FINISHED)).number
    blob = api.opened.artifacts.put_bytes(data)
    api.store.record_artifact(number, path, blob.size, blob.sha256, blob.content_ref)
    return number


def ingest(api: Served, headers: dict[str, str], run_id: str, items: list[Any], writer: str = "w") -> None:
    body = zlib.compress(msgpack.packb({"run_id": run_id, "writer": writer, "items": items}), 1)
    answer = api.client.post("/api/v1/ingest", content=body, headers={**headers, **INGEST})
    assert answer.status_code == 200, answer.text


def start(name: str, project: str = "b") -> list[Any]:
    return [0, "e", 1.0, {"event": "start", "project": project, "name": name, "config": {}, "labels": [],
                          "notes": "", "command": [], "host": "h", "environment": {}}]


def artifact(seq: int, path: str, sha: str, size: int) -> list[Any]:
    return [seq, "a", 2.0, path, size, sha, f"sha256:{sha}"]


def missing(api: Served, headers: dict[str, str], shas: list[str]) -> list[str]:
    answer = api.client.post("/api/v1/blobs/missing", json={"sha256": shas}, headers=headers)
    assert answer.status_code == 200, answer.text
    return list(answer.json()["missing"])


def test_a_project_token_cannot_attach_or_download_another_project_s_blob_by_hash(api: Served) -> None:
    b, admin = tokens(api)
    a_run_holding(api, SECRET)
    run_id = new_ulid()
    ingest(api, b, run_id, [start("thief"), artifact(1, "loot.bin", SECRET_SHA, len(SECRET))])

    c = api.client
    assert c.get("/api/v1/runs/thief", headers=b).status_code == 200  # the rest of the batch went in
    assert c.get("/api/v1/runs/thief/artifacts", headers=b).json() == []
    download = c.get("/api/v1/runs/thief/artifacts/loot.bin", headers=b)
    assert download.status_code == 404 and SECRET not in download.content
    assert api.store.list_artifacts(api.store.get_run("thief").number) == []
    said = " ".join(line["text"] for line in c.get("/api/v1/runs/thief/logs", headers=b).json())
    assert "artifact 'loot.bin' not recorded" in said and "was not uploaded" in said
    # An artifact record naming content that exists nowhere gets the same words: nothing is revealed.
    nowhere = hashlib.sha256(b"no such content").hexdigest()
    ingest(api, b, run_id, [artifact(2, "nothing.bin", nowhere, 3)])
    logs = [line["text"] for line in c.get("/api/v1/runs/thief/logs", headers=b).json()]
    assert [text.split(":")[0] for text in logs] == ["artifact 'loot.bin' not recorded",
                                                     "artifact 'nothing.bin' not recorded"]
    assert logs[0].split("(sha256")[1][13:] == logs[1].split("(sha256")[1][13:]

    # An unlimited token refers to what the server holds, as before.
    ingest(api, admin, new_ulid(), [start("admin-run"), artifact(1, "same.bin", SECRET_SHA, len(SECRET))])
    assert c.get("/api/v1/runs/admin-run/artifacts/same.bin", headers=admin).content == SECRET


def test_missing_says_missing_for_what_the_token_cannot_see_and_uploading_the_bytes_grants_it(
        api: Served) -> None:
    b, admin = tokens(api)
    a_run_holding(api, SECRET)
    assert missing(api, admin, [SECRET_SHA]) == []  # an unlimited token is told what the server holds
    assert missing(api, b, [SECRET_SHA]) == [SECRET_SHA]  # b must prove it has the bytes

    c = api.client
    put = c.put(f"/api/v1/blobs/{SECRET_SHA}", content=SECRET, headers={**b, **OCTETS})
    assert put.status_code == 200 and put.json() == {"sha256": SECRET_SHA, "size": len(SECRET)}
    assert missing(api, b, [SECRET_SHA]) == []
    again = c.put(f"/api/v1/blobs/{SECRET_SHA}", content=SECRET, headers={**b, **OCTETS})
    assert again.status_code == 200  # uploading content the store holds is idempotent
    ingest(api, b, new_ulid(), [start("owner"), artifact(1, "model.bin", SECRET_SHA, len(SECRET))])
    assert c.get("/api/v1/runs/owner/artifacts/model.bin", headers=b).content == SECRET
    # The grant is b's alone: another project's token is still told to upload.
    _, c_writer = Tokens(api.store).create("writer", "c-writer", project="c")
    assert missing(api, bearer(c_writer), [SECRET_SHA]) == [SECRET_SHA]
    # Bytes that do not match the name prove nothing.
    other = hashlib.sha256(b"other").hexdigest()
    a_run_holding(api, b"other", name="a-other")
    wrong = c.put(f"/api/v1/blobs/{other}", content=b"not other", headers={**b, **OCTETS})
    assert wrong.status_code == 400
    assert missing(api, b, [other]) == [other]


def test_another_project_s_snapshot_manifest_and_diff_are_not_reachable(api: Served, tmp_path: Path) -> None:
    b, _ = tokens(api)
    code = tmp_path / "code"
    code.mkdir()
    (code / "train.py").write_text("API_KEY = 'project-a-secret'\n")
    (code / "data.csv").write_text("a,b\n1,2\n")
    artifacts = api.opened.artifacts
    snap = take(code, artifacts)
    diff = artifacts.put_bytes(b"-API_KEY = 'old'\n+API_KEY = 'project-a-secret'\n")
    api.store.create_run(NewRun(project="a", name="launched", status=RunStatus.FINISHED, snapshot_id=snap.id,
                                git_diff_ref=diff.content_ref))
    manifest = sha_of_ref(snap.id)
    files = sorted(sha for sha, _ in manifest_of(snap.id, artifacts).values())

    assert sorted(missing(api, b, [manifest, *files, diff.sha256])) == sorted([manifest, *files, diff.sha256])
    run_id = new_ulid()
    ingest(api, b, run_id, [start("thief"), artifact(1, "manifest.json", manifest, 100),
                            *(artifact(2 + i, f"f{i}", sha, 1) for i, sha in enumerate(files)),
                            [9, "e", 3.0, {"event": "environment", "git_diff_ref": diff.content_ref}]])
    c = api.client
    assert c.get("/api/v1/runs/thief/artifacts", headers=b).json() == []
    assert c.get("/api/v1/runs/thief/artifacts/manifest.json", headers=b).status_code == 404
    served = c.get("/api/v1/runs/thief/diff", headers=b)
    assert served.status_code == 404 and b"project-a-secret" not in served.content
    assert api.store.get_run("thief").git_diff_ref is None
    # A diff the token uploaded itself is its own: the SDK's flow (upload, artifact, environment event).
    mine = b"+print('b')\n"
    mine_sha = hashlib.sha256(mine).hexdigest()
    assert c.put(f"/api/v1/blobs/{mine_sha}", content=mine, headers={**b, **OCTETS}).status_code == 200
    ingest(api, b, run_id, [artifact(10, "code/uncommitted.diff", mine_sha, len(mine)),
                            [11, "e", 4.0, {"event": "environment", "git_diff_ref": f"sha256:{mine_sha}"}]])
    assert c.get("/api/v1/runs/thief/diff", headers=b).content == mine


def test_run_references_of_a_limited_token_name_no_other_project_s_runs(api: Served) -> None:
    b, admin = tokens(api)
    store = api.store
    a_runs = [store.create_run(NewRun(project="a", name=name, id=f"01HZZZZZZZZZZZZZZZZZZZZZ{i}A")).number
              for i, name in enumerate(["dup", "dup", "shared"])]
    mine = store.create_run(NewRun(project="b", name="shared", id="01HYYYYYYYYYYYYYYYYYYYYYYA")).number
    c = api.client

    # A name two of a's runs carry, an id prefix of a's runs, a's run number: not found, nothing listed.
    for ref in ("dup", "01HZZZ", str(a_runs[0])):
        for path in (f"/api/v1/runs/{ref}", f"/api/v1/runs/{ref}/artifacts", f"/api/v1/alerts?run={ref}"):
            answer = c.get(path, headers=b)
            assert answer.status_code == 404, (path, answer.text)
            assert not any(str(n) in answer.json()["error"].replace(ref, "") for n in a_runs), answer.text
    # a's run number is answered as a number that does not exist at all.
    assert (c.get(f"/api/v1/runs/{a_runs[0]}", headers=b).json()["error"]
            == c.get("/api/v1/runs/999999", headers=b).json()["error"].replace("999999", str(a_runs[0])))
    # A name b's run shares with a's run is b's run, not an ambiguity.
    shared = c.get("/api/v1/runs/shared", headers=b)
    assert shared.status_code == 200 and shared.json()["number"] == mine
    assert c.patch("/api/v1/runs/shared", json={"name": "mine"}, headers=b).status_code == 200
    assert store.get_run(a_runs[2]).name == "shared"

    # An unlimited token sees every run: the ambiguity is real, and named.
    ambiguous = c.get("/api/v1/runs/dup", headers=admin)
    assert ambiguous.status_code == 409
    assert f"numbers {a_runs[0]}, {a_runs[1]}" in ambiguous.json()["error"]


def _until_tokens_required(url: str) -> None:
    """A server trusts "no token exists" for a second: wait until it asks for one."""
    deadline = time.monotonic() + 10
    while httpx.get(f"{url}/api/health", timeout=5).status_code != 401:
        assert time.monotonic() < deadline, "the server still needs no token"
        time.sleep(0.05)


SDK_SCRIPT = """\
import pathlib, runyard
run = runyard.init(project="b", name="train")
run.log({"loss": 0.5})
pathlib.Path("model.bin").write_bytes(%r)
pathlib.Path("notes.txt").write_text("b's own notes")
run.log_artifact("model.bin")
run.log_artifact("notes.txt")
run.finish()
"""


def test_the_sdk_with_a_limited_token_uploads_and_reads_its_artifacts(live_server: LiveServer,
                                                                       tmp_path: Path) -> None:
    settings = resolve(environ=home_env(live_server.home, live_server.db_url), cwd=tmp_path)
    opened = open_store(settings)
    try:
        # Project a holds the same model under a run of the same name: b's run is still b's to read.
        number = opened.store.create_run(NewRun(project="a", name="train", status=RunStatus.FINISHED)).number
        blob = opened.artifacts.put_bytes(SECRET)
        opened.store.record_artifact(number, "model.bin", blob.size, blob.sha256, blob.content_ref)
        _, b_writer = Tokens(opened.store).create("writer", "b-writer", project="b")
    finally:
        opened.close()
    _until_tokens_required(live_server.url)
    env = client_env(tmp_path / "laptop", live_server.url, b_writer)
    work = tmp_path / "work"
    work.mkdir()
    (work / "train.py").write_text(textwrap.dedent(SDK_SCRIPT % SECRET))
    done = subprocess.run([sys.executable, "train.py"], env=env, cwd=work, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "runyard.cli.main", *args], env=env, capture_output=True,
                              text=True, timeout=60)

    copied = cli("cp", "train:model.bin", str(tmp_path / "model.bin"))
    assert copied.returncode == 0, copied.stderr
    assert (tmp_path / "model.bin").read_bytes() == SECRET
    copied = cli("cp", "train:notes.txt", str(tmp_path / "notes.txt"))
    assert copied.returncode == 0, copied.stderr
    assert (tmp_path / "notes.txt").read_text() == "b's own notes"
    assert "train" in cli("show", "train").stdout


def test_content_is_read_by_its_hash_only_by_a_token_whose_project_may_see_it(api: Served) -> None:
    # GET /blobs/{sha256} is how a run's supervisor on a Ray node reads its code: a project token gets
    # its project's content and nothing else, with the same answer whether the server holds it or not.
    b, admin = tokens(api)
    a_run_holding(api, SECRET)
    c = api.client
    assert c.get(f"/api/v1/blobs/{SECRET_SHA}", headers=admin).content == SECRET
    refused = c.get(f"/api/v1/blobs/{SECRET_SHA}", headers=b)
    nowhere = c.get(f"/api/v1/blobs/{hashlib.sha256(b'no such content').hexdigest()}", headers=b)
    assert refused.status_code == nowhere.status_code == 404
    assert refused.json()["error"].split(" ", 2)[:2] == nowhere.json()["error"].split(" ", 2)[:2]
    assert SECRET not in refused.content
    # Granted to b's project (uploaded by it, or shared with its run's code): readable.
    api.store.grant_content("b", SECRET_SHA)
    assert c.get(f"/api/v1/blobs/{SECRET_SHA}", headers=b).content == SECRET
    assert c.get("/api/v1/blobs/not-a-hash", headers=admin).status_code == 400
