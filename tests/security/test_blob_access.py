"""Issue 14, item 4: content is read and referred to only through runs a token may read. A run
reference a limited token sends is resolved among its project's runs only, so no error names another
project's runs."""

from __future__ import annotations

import pytest
from tests.unit.server.conftest import Served
from tests.unit.server.conftest import api as api

from runyard.store.api import NewRun
from runyard.store.tokens import Tokens

__all__ = ["api"]  # a fixture, imported to be used here

pytestmark = pytest.mark.timeout(180)


def bearer(secret: str) -> dict[str, str]:
    return {"authorization": f"Bearer {secret}"}


def tokens(api: Served) -> tuple[dict[str, str], dict[str, str]]:
    """(a writer token limited to project b, an unlimited admin token)."""
    made = Tokens(api.store)
    _, b_writer = made.create("writer", "b-writer", project="b")
    _, admin = made.create("admin", "admin")
    api.client.app.state.policy.tokens_check_interval = 0
    return bearer(b_writer), bearer(admin)


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
