"""/api/v1/models in process: who may read and change the registry, and what the answers say."""

from __future__ import annotations

from tests.unit.server.conftest import Served
from tests.unit.server.conftest import api as api

from runyard.store.api import NewRun
from runyard.store.tokens import Tokens
from runyard.types import RunStatus

V1 = "/api/v1/models"


def _run(api: Served, project: str = "p") -> int:
    number = api.store.create_run(NewRun(project=project, name=f"best-{project}", status=RunStatus.FINISHED)).number
    api.store.record_artifact(number, "outputs/model.pt", 3, "a" * 64, "sha256:" + "a" * 64)
    return number


def _bearer(secret: str) -> dict[str, str]:
    return {"authorization": f"Bearer {secret}"}


def test_writers_register_and_alias_readers_read(api: Served) -> None:
    number = _run(api)
    tokens = Tokens(api.store)
    _, writer = tokens.create("writer", "ci-bot")
    _, reader = tokens.create("reader", "viewer")
    api.client.app.state.policy.tokens_check_interval = 0
    c = api.client
    made = c.post(f"{V1}/digits/versions", json={"run": "best-p", "path": "outputs/model.pt", "description": "d",
                                                 "aliases": ["staging"]}, headers=_bearer(writer))
    assert made.status_code == 200, made.text
    body = made.json()
    assert (body["version"], body["run_number"], body["path"], body["aliases"]) == (1, number, "outputs/model.pt",
                                                                                    ["staging"])
    assert body["registered_by"] == "ci-bot"  # the token's name, whatever the client would claim
    assert c.post(f"{V1}/digits/versions", json={"run": str(number)}, headers=_bearer(reader)).status_code == 403
    assert c.put(f"{V1}/digits/aliases/production", json={"version": 1}, headers=_bearer(reader)).status_code == 403
    moved = c.put(f"{V1}/digits/aliases/production", json={"version": 1}, headers=_bearer(writer))
    assert moved.json()["aliases"] == ["production", "staging"]
    got = c.get(f"{V1}/digits/versions/production", headers=_bearer(reader))
    assert got.status_code == 200 and got.json()["version"] == 1
    assert [m["name"] for m in c.get(V1, headers=_bearer(reader)).json()] == ["digits"]
    reserved = c.put(f"{V1}/digits/aliases/latest", json={"version": 1}, headers=_bearer(writer))
    assert reserved.status_code == 400 and "reserved" in reserved.json()["error"]
    missing = c.post(f"{V1}/digits/versions", json={"run": str(number), "path": "nothing"}, headers=_bearer(writer))
    assert missing.status_code == 404 and "has no artifact nothing" in missing.json()["error"]
    unknown = c.get(f"{V1}/digits/versions/prod", headers=_bearer(reader))
    assert unknown.status_code == 404 and "aliases: production -> 1, staging -> 1, latest" in unknown.json()["error"]
    removed = c.request("DELETE", f"{V1}/digits/aliases/staging", json={}, headers=_bearer(writer))
    assert removed.json() == {"version": 1}


def test_a_project_token_may_not_use_the_registry(api: Served) -> None:
    number = _run(api, "p")
    theirs = _run(api, "q")
    api.store.register_model("digits", theirs, "outputs")
    _, limited = Tokens(api.store).create("writer", "p-bot", "p")
    api.client.app.state.policy.tokens_check_interval = 0
    c = api.client
    for method, path, body in (("GET", V1, None), ("GET", f"{V1}/digits/versions", None),
                               ("GET", f"{V1}/digits/versions/latest", None),
                               ("POST", f"{V1}/digits/versions", {"run": str(number)}),
                               ("PUT", f"{V1}/digits/aliases/production", {"version": 1}),
                               ("DELETE", f"{V1}/digits/aliases/production", {})):
        answer = c.request(method, path, json=body, headers=_bearer(limited))
        assert answer.status_code == 403, (method, path, answer.text)
        assert "limited to project p" in answer.json()["error"]
    assert [v.version for v in api.store.model_versions("digits")] == [1]
