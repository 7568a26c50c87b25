"""schemathesis against the server's own OpenAPI spec: whatever a client sends, no 500s."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from tests.unit.server.conftest import home_env

from runyard.config import resolve
from runyard.server.app import create_app
from runyard.store.api import LogLine, NewRun
from runyard.store.home import open_store
from runyard.store.series import Points
from runyard.types import RunStatus


def _seeded_app() -> Any:
    """The app on a SQLite home holding one run with points, a log line and an artifact.

    Built at import because schemathesis parametrizes from a schema object; the directory goes at exit."""
    root = Path(tempfile.mkdtemp(prefix="runyard-fuzz-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    home = root / "home"
    settings_ = resolve(environ=home_env(home, f"sqlite:///{root / 'runyard.db'}"), cwd=root)
    opened = open_store(settings_)
    atexit.register(opened.close)
    store = opened.store
    run = store.create_run(NewRun(project="p", name="seeded", status=RunStatus.RUNNING, config={"lr": 0.1}))
    steps = np.arange(100, dtype=np.int64)
    store.append_points(run.number, {"loss": Points.of(steps, steps * 1.0, steps * 0.5)})
    store.append_logs(run.number, [LogLine(1.0, "hello")])
    blob = opened.artifacts.put_bytes(b"content")
    store.record_artifact(run.number, "a.txt", blob.size, blob.sha256, blob.content_ref)
    # schemathesis's ASGI transport names the host "testserver".
    # Open, as a single user's: the fuzzing is of the routes, not of the token check.
    return create_app(settings_, store, opened.artifacts, "127.0.0.1", 8765, allowed_hosts=("testserver",),
                      insecure_local=True)


@schemathesis.serializer("application/msgpack")
def _msgpack(ctx: Any, value: Any) -> bytes:
    import msgpack

    if isinstance(value, bytes | str) and not isinstance(value, str):
        return value
    try:
        return bytes(msgpack.packb(value))
    except (TypeError, ValueError):
        return str(value).encode()


# The event stream never ends by design; it has tests of its own (tests/flow/test_remote.py).
schema = schemathesis.openapi.from_asgi("/api/openapi.json", _seeded_app()).exclude(path="/api/v1/events")


@schema.parametrize()
@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_no_request_makes_the_server_fail(case: schemathesis.Case) -> None:
    case.call_and_validate(checks=[not_a_server_error])
