"""What a project's upload proved lasts only as long as the content: once ``runyard gc`` or
``runyard rm`` removed it, the project's grant goes too (``blob_grants``). Otherwise, when anyone
stored the same bytes again, the project could refer to them and read them without holding them.
On both engines, through the commands a user runs on the server's machine."""

from __future__ import annotations

import hashlib
import os
import time

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from tests.unit.server.conftest import Served, home_env

from runyard.cli.main import cli
from runyard.store.api import RunPatch
from runyard.store.newrun import NewRun
from runyard.store.schema import blob_grants
from runyard.store.tokens import Tokens
from runyard.types import RunStatus


def _auth(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def _put(api: Served, token: str, content: bytes) -> str:
    sha = hashlib.sha256(content).hexdigest()
    answer = api.client.put(f"/api/v1/blobs/{sha}", content=content,
                            headers={**_auth(token), "content-type": "application/octet-stream"})
    assert answer.status_code == 200, answer.text
    return sha


def _missing(api: Served, token: str, sha: str) -> list[str]:
    answer = api.client.post("/api/v1/blobs/missing", json={"sha256": [sha]}, headers=_auth(token))
    assert answer.status_code == 200, answer.text
    return list(answer.json()["missing"])


def _grants(api: Served) -> int:
    with api.store.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(blob_grants)).scalar_one())


def _runyard(api: Served, db_url: str, *args: str) -> None:
    env = home_env(api.home, db_url)
    result = CliRunner().invoke(cli, list(args), env={k: env.get(k) for k in {*os.environ, *env}},
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output


def _age(api: Served, sha: str, seconds: float) -> None:
    """Make stored content look written ``seconds`` ago (gc keeps what was written within the hour)."""
    path = api.opened.artifacts.root / "objects" / sha[:2] / sha[2:]
    then = time.time() - seconds
    os.utime(path, (then, then))


@pytest.fixture
def tokens(api: Served) -> tuple[str, str]:
    """(a writer of project p, an admin): once tokens exist, every request needs one."""
    made = Tokens(api.store)
    return made.create("writer", project="p")[1], made.create("admin")[1]


def test_gc_forgets_a_project_upload_grant_with_the_content(api: Served, db_url: str,
                                                             tokens: tuple[str, str]) -> None:
    limited, admin = tokens
    sha = _put(api, limited, b"uploaded by project p, recorded by no run")
    assert _missing(api, limited, sha) == [] and _grants(api) == 1
    _age(api, sha, 2 * 3600)
    _runyard(api, db_url, "gc")
    assert _missing(api, admin, sha) == [sha]  # collected: nothing referred to it
    assert _grants(api) == 0
    _put(api, admin, b"uploaded by project p, recorded by no run")  # someone stores the same bytes again
    assert _missing(api, limited, sha) == [sha]  # p must upload them itself to refer to them


def test_gc_keeps_the_grants_of_content_it_keeps(api: Served, db_url: str, tokens: tuple[str, str]) -> None:
    limited, _ = tokens
    recent = _put(api, limited, b"uploaded a moment ago")
    _runyard(api, db_url, "gc")
    assert _missing(api, limited, recent) == [] and _grants(api) == 1
    _age(api, recent, 2 * 3600)
    _runyard(api, db_url, "gc", "--dry-run")  # a dry run changes nothing
    assert _missing(api, limited, recent) == [] and _grants(api) == 1


def test_rm_forgets_the_grants_of_the_content_it_removes(api: Served, db_url: str, tokens: tuple[str, str]) -> None:
    limited, admin = tokens
    content = b"an artifact of a run about to be deleted"
    sha = _put(api, limited, content)
    run = api.store.create_run(NewRun(project="p", name="doomed", status=RunStatus.RUNNING))
    api.store.record_artifact(run.number, "model.bin", len(content), sha, f"sha256:{sha}")
    api.store.update_run(run.number, RunPatch(status=RunStatus.FINISHED, exit_code=0, ended_at=time.time() - 10))
    _age(api, sha, 3600)
    _runyard(api, db_url, "rm", "doomed", "--yes")
    assert _missing(api, admin, sha) == [sha] and _grants(api) == 0
    _put(api, admin, content)
    assert _missing(api, limited, sha) == [sha]
