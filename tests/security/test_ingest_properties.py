"""Issue 14, the suite: random well-formed and malformed ingest batches, sent with every role to a real
app on each engine, as a shipper sends them (a msgpack map of run_id, writer and items, deflated or
not). After each example:

- no 500, and no 503 (the database is up): a malformed batch gets a 4xx with a short message;
- every run's status moved only as its own process could move it (store/transitions.py BY_RECORDS),
  and a run an ingest batch creates is running or ended;
- a token limited to project B changed, created and read nothing of project A (runs, metrics, logs,
  notes, labels, artifacts, inputs, cursors), and its answers carry nothing of A;
- a reader, or a request without a token, changed nothing.

CI runs a small, derandomized number of examples; ``RUNYARD_HYPOTHESIS_EXAMPLES=2000`` hunts for more
(random seeds, unless ``RUNYARD_HYPOTHESIS_SEED`` fixes one).
"""

from __future__ import annotations

import os
import re
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, note, seed, settings
from hypothesis import strategies as st
from tests.conftest import ENGINES, PG_URL
from tests.unit.server.conftest import BASE, home_env

from runyard.config import resolve
from runyard.ids import new_ulid
from runyard.server.app import create_app
from runyard.spool.records import SEQ, STEP, TIME
from runyard.store.api import RunPatch, RunQuery
from runyard.store.engine import create_engine
from runyard.store.home import Opened, open_store
from runyard.store.migrate import upgrade
from runyard.store.newrun import NewRun
from runyard.store.scratch import temporary_schema
from runyard.store.sql import SqlStore
from runyard.store.tokens import Tokens
from runyard.store.transitions import BY_RECORDS
from runyard.types import END_STATUSES, RunStatus

EXAMPLES = int(os.environ.get("RUNYARD_HYPOTHESIS_EXAMPLES", "0"))
HUNTING = EXAMPLES > 0
if "RUNYARD_HYPOTHESIS_SEED" in os.environ:
    _seeded = seed(int(os.environ["RUNYARD_HYPOTHESIS_SEED"]))
else:
    def _seeded(f: Any) -> Any:
        return f

PROJECT_A, PROJECT_B = "proj-a", "proj-b"
#: Text put into project A's runs: no answer to a token limited to B may contain it.
SECRET_A = "a-secret-7f3c"
ROLES = ("none", "reader", "writer", "admin", "writer-a", "writer-b")
MSGPACK = "application/msgpack"
#: What a 400 says when a Python error escaped the checks instead of one naming the field.
PYTHON_ERROR = re.compile(r"index out of range|has no attribute|unhashable|not subscriptable|: '[^']*'$")
#: The run id a generated batch carries until the example has made its target run.
PLACEHOLDER = "0" * 26
S = RunStatus
#: What the answers were, printed when hunting (to see that the strategies reach the store).
OUTCOMES: Counter[str] = Counter()


@dataclass
class World:
    """One app on one engine for the whole module, its tokens, and project A's standing runs."""

    client: TestClient
    opened: Opened
    secrets: dict[str, str]
    #: Runs of project A that every example may aim at (their run ids).
    standing_a: list[str] = field(default_factory=list)

    @property
    def store(self) -> SqlStore:
        return self.opened.store


def launched(store: SqlStore, project: str, status: RunStatus, name: str | None = None) -> str:
    """A run as `runyard run` queues it, moved by its agent's routes to ``status``."""
    run_id = new_ulid()
    run = store.create_run(NewRun(project=project, id=run_id, name=name, status=S.QUEUED, executor="local",
                                  config={"secret": SECRET_A} if project == PROJECT_A else {}))
    if status is S.QUEUED:
        return run_id
    assert store.claim(run.number, [], "agent1", "h") is not None
    if status is S.STARTING:
        return run_id
    store.update_run(run.number, RunPatch(status=S.RUNNING))
    if status is S.LOST:
        assert store.mark_lost(run_id, "its heartbeat stopped")
    elif status.is_terminal():
        store.update_run(run.number, RunPatch(status=status, exit_code=0))
    return run_id


def body(run_id: Any, writer: Any, items: Any, deflated: bool = True) -> bytes:
    packed = msgpack.packb({"run_id": run_id, "writer": writer, "items": items})
    return zlib.compress(packed, 1) if deflated else packed


def headers(world: World, role: str, deflated: bool = True) -> dict[str, str]:
    out = {"content-type": MSGPACK}
    if deflated:
        out["content-encoding"] = "deflate"
    if role != "none":
        out["authorization"] = f"Bearer {world.secrets[role]}"
    return out


@pytest.fixture(scope="module", params=ENGINES)
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("ingest-properties")
    with _database(request.param, tmp) as db_url:
        settings_ = resolve(environ=home_env(tmp / "home", db_url), cwd=tmp)
        if db_url.startswith("postgresql"):
            engine = create_engine(db_url)
            upgrade(engine)
            engine.dispose()
        opened = open_store(settings_)
        tokens = Tokens(opened.store)
        secrets = {
            "reader": tokens.create("reader", "reader")[1],
            "writer": tokens.create("writer", "writer")[1],
            "admin": tokens.create("admin", "admin")[1],
            "writer-a": tokens.create("writer", "writer-a", project=PROJECT_A)[1],
            "writer-b": tokens.create("writer", "writer-b", project=PROJECT_B)[1],
        }
        app = create_app(settings_, opened.store, opened.artifacts, "127.0.0.1", 8765)
        with TestClient(app, base_url=BASE, raise_server_exceptions=False) as client:
            world = World(client, opened, secrets)
            for status in (S.QUEUED, S.STARTING, S.RUNNING, S.LOST, S.FINISHED):
                world.standing_a.append(launched(opened.store, PROJECT_A, status, f"a-{status.value}"))
            # A run the SDK started through ingest, with metrics, logs, notes and labels.
            sdk_run = new_ulid()
            items = [start_event(0, PROJECT_A, "a-sdk"), {"loss": 1.5, SEQ: 1, TIME: 2.0, STEP: 0},
                     [2, "l", 3.0, "stdout", f"log {SECRET_A}"], [3, "n", 3.0, f"note {SECRET_A}"],
                     [4, "t", 3.0, ["secret-label"], []], [5, "s", 3.0, {"best": SECRET_A}]]
            answer = client.post("/api/v1/ingest", content=body(sdk_run, "w1", items),
                                 headers=headers(world, "writer-a"))
            assert answer.status_code == 200, answer.text
            world.standing_a.append(sdk_run)
            yield world
        opened.close()


class _database:
    def __init__(self, engine: str, tmp: Path) -> None:
        self.engine, self.tmp = engine, tmp

    def __enter__(self) -> str:
        if self.engine == "sqlite":
            self._schema = None
            return f"sqlite:///{self.tmp / 'runyard.db'}"
        self._schema = temporary_schema(PG_URL, "runyard_prop")
        return self._schema.__enter__()

    def __exit__(self, *exc: Any) -> None:
        if self._schema is not None:
            self._schema.__exit__(*exc)


# -- records ---------------------------------------------------------------------------------------

def start_event(seq: int, project: Any, name: Any, **more: Any) -> list[Any]:
    return [seq, "e", 1.0 + seq, {"event": "start", "project": project, "name": name, "config": {"lr": 0.1},
                                  "labels": [], "notes": "", "command": ["python", "t.py"], "host": "h",
                                  "environment": {}, **more}]


DEEP: Any = 1
for _ in range(300):
    DEEP = [DEEP]
#: Values that break something somewhere: past 64 bits, not finite, control characters, the wrong
#: container, an extension type, bytes, deep or long.
NASTY: list[Any] = [
    2**63, 2**64 - 1, -(2**63), 2**63 - 1, 2**31, -(2**31) - 1, float("nan"), float("inf"), -float("inf"), 1e300,
    "", "\x00", "a\x00b", "\x1b]0;title\x07", "line\nbreak", '"; drop', "x" * 3000, b"bytes", None, True, 0, -1,
    {}, [], {"a": {"b": [1, {"c": None}]}}, [[[[]]]], [1, "two", 3.0], msgpack.ExtType(5, b"xx"),
    msgpack.Timestamp(1, 0), {"k\x00": 1}, {b"bin": 1}, {"": 1},
    "é中\U0001f600", "\ufffd", DEEP, {"d": DEEP},
]
nasty = st.sampled_from(NASTY)
keys = st.sampled_from(["loss", "acc", "train/loss", "system/cpu", "lr", "a.b", "k" * 256])
texts = st.one_of(st.sampled_from(["ok", "", "é", "x" * 300]), st.text(max_size=40))
numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-(2**53), 2**53))
plain = st.one_of(numbers, texts, st.none(), st.booleans(), st.lists(st.integers(-(2**63), 2**63 - 1), max_size=3))
#: A value of user data (config, summary, environment): mostly plain, sometimes nasty.
user_values = st.one_of(plain, plain, nasty)
statuses = st.sampled_from([s.value for s in (*END_STATUSES, *END_STATUSES, *END_STATUSES, *RunStatus)]
                           + ["exploded", "", "FINISHED"])


@st.composite
def record(draw: st.DrawFn, seq: int, project: str) -> Any:
    t = draw(st.sampled_from([2.0, 1.7e9, 0.0, 3.5] * 5 + [float("nan"), float("inf"), 1e300, -1.0]))
    kind = draw(st.sampled_from(["m"] * 4 + ["l", "l", "n", "c", "c", "s", "t", "h", "start", "end", "end", "env",
                                              "alert", "i", "a", "unknown-event"] * 2 + ["unknown"]))
    if kind == "m":
        values = draw(st.dictionaries(keys, numbers, min_size=1, max_size=3))
        return {**values, SEQ: seq, TIME: t, STEP: draw(st.integers(0, 10**6))}
    if kind == "l":
        return [seq, "l", t, draw(st.sampled_from(["stdout", "stderr", "system", "other"])), draw(texts)]
    if kind == "n":
        return [seq, "n", t, draw(texts)]
    if kind in ("c", "s"):
        return [seq, kind, t, draw(st.dictionaries(keys, user_values, max_size=3))]
    if kind == "t":
        labels = st.lists(st.sampled_from(["x", "best", "secret-label", "a b"]), max_size=2)
        return [seq, "t", t, draw(labels), draw(labels)]
    if kind == "h":
        return [seq, "h", t]
    if kind == "start":
        return start_event(seq, draw(st.sampled_from([project, project, PROJECT_A, PROJECT_B, None])),
                           draw(st.sampled_from([None, "r", f"n{seq}"])),
                           config={"lr": draw(user_values)}, environment={"python": draw(user_values)})
    if kind == "end":
        event: dict[str, Any] = {"event": "end", "status": draw(statuses)}
        if draw(st.booleans()):
            event["exit_code"] = draw(st.integers(-300, 300))
        if draw(st.booleans()):
            event["message"] = draw(texts)
        return [seq, "e", t, event]
    if kind == "env":
        git = draw(st.sampled_from(["git_commit", "git_branch", "git_diff_ref"]))
        return [seq, "e", t, {"event": "environment", git: draw(st.sampled_from(["abc", "main"]) | nasty),
                              draw(keys): draw(user_values)}]
    if kind == "alert":
        return [seq, "e", t, {"event": "alert", "rule": {"name": "nan", "kind": "nan", "metric": "loss"}}]
    if kind == "i":
        return [seq, "i", t, draw(st.sampled_from(["artifact", "dataset", "path"])), "0" * 64,
                draw(st.sampled_from([None, 1, 2])), draw(st.sampled_from([None, "data/x"])), None]
    if kind == "a":
        return [seq, "a", t, draw(st.sampled_from(["out/m.pt", "a.txt"])), 3, "ab" * 32, "ref", 0o644]
    if kind == "unknown":
        return [seq, "zz", t, draw(plain)]
    return [seq, "e", t, {"event": "future-event", "x": draw(plain)}]


def _slots(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every place in a record a value (or a map's key, marked "key") could be replaced."""
    yield path
    if isinstance(value, dict):
        for k, v in value.items():
            yield (*path, ("key", k))
            yield from _slots(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _slots(v, (*path, i))


def _replaced(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(head, tuple):  # a map's key
        key = head[1]
        if not isinstance(new, str | bytes):
            new = str(new)
        return {(new if k == key else k): v for k, v in value.items()}
    if isinstance(value, dict):
        return {k: (_replaced(v, rest, new) if k == head else v) for k, v in value.items()}
    return [(_replaced(v, rest, new) if i == head else v) for i, v in enumerate(value)]


@dataclass
class Batch:
    run_id: Any
    writer: Any
    items: Any
    deflated: bool
    #: "ok", or how the body around the records is broken: "garbage", "truncated", "list".
    envelope: str = "ok"
    garbage: bytes = b""
    mutated: int = 0

    def content(self, run_id: str) -> bytes:
        """The body, for the example's run (the target exists only once the example runs)."""
        run_id = run_id if self.run_id == PLACEHOLDER else self.run_id
        if self.envelope == "garbage":
            return self.garbage
        if self.envelope == "list":
            packed = msgpack.packb([run_id, self.writer, self.items])
            return zlib.compress(packed) if self.deflated else packed
        whole = body(run_id, self.writer, self.items, self.deflated)
        # Cut into the records themselves (cutting only deflate's checksum leaves them whole).
        return whole[:len(whole) // 2] if self.envelope == "truncated" else whole


@st.composite
def batch(draw: st.DrawFn, run_id: str, project: str, first_seq: int) -> Batch:
    count = draw(st.integers(1, 6))
    seqs = [first_seq + i for i in range(count)]
    items = [draw(record(seq, project)) for seq in seqs]
    if first_seq == 0 and draw(st.integers(0, 4)):  # most writers begin with a start event
        items[0] = start_event(0, project, draw(st.sampled_from([None, "r", "n0"])),
                               config={"lr": draw(user_values)}, environment={"python": draw(user_values)})
    mutations = draw(st.sampled_from([0, 0, 0, 1, 1, 2]))
    for _ in range(mutations):
        i = draw(st.integers(0, len(items) - 1))
        slots = list(_slots(items[i]))
        items[i] = _replaced(items[i], draw(st.sampled_from(slots)), draw(nasty))
    out = Batch(run_id, "w" + str(draw(st.integers(1, 2))), items, draw(st.booleans()), mutated=mutations)
    envelope = draw(st.sampled_from(["ok"] * 12 + ["run_id", "writer", "items", "garbage", "truncated", "list"]))
    if envelope in ("run_id", "writer", "items"):
        setattr(out, envelope, draw(nasty))
    elif envelope != "ok":
        out.envelope, out.garbage = envelope, draw(st.binary(max_size=64))
    return out


# -- what is observed ------------------------------------------------------------------------------

def observed(store: SqlStore, run_id: str) -> Any:
    """All a run holds, or None when no run has this id."""
    cursor_w1, number, _ = store.ingest_state(run_id, "w1")
    if number is None:
        return None
    run = store.get_run(number)
    series = {info.key: [a.tolist() for a in _points(store.history(number, info.key))]
              for info in store.list_series(number)}
    return (run, series, store.read_logs(number, 0, 100_000), store.list_artifacts(number), store.inputs_of(number),
            cursor_w1, store.ingest_state(run_id, "w2")[0], store.list_alert_rules(run=number))


def _points(points: Any) -> list[Any]:
    return [points.steps, points.times, points.values]


def runs_of(store: SqlStore, project: str) -> list[str]:
    return [r.id for r in store.list_runs(RunQuery(project=project, limit=10_000)).items]


def may_move(old: RunStatus, new: RunStatus) -> bool:
    """Whether a run's own records may have moved it from ``old`` to ``new`` (in one or two batches)."""
    if old is new:
        return True
    once = BY_RECORDS.get(old, frozenset())
    return new in once or any(new in BY_RECORDS.get(mid, frozenset()) for mid in once)


# -- the property ----------------------------------------------------------------------------------

@st.composite
def scenario(draw: st.DrawFn) -> dict[str, Any]:
    role = draw(st.sampled_from(ROLES))
    target = draw(st.sampled_from(["standing-a", "fresh-a", "fresh-b", "new", "new"]))
    status = draw(st.sampled_from([S.QUEUED, S.STARTING, S.STARTING, S.RUNNING, S.RUNNING, S.LOST, S.FINISHED,
                                   S.STOPPED]))
    standing = draw(st.integers(0, 5))
    project = PROJECT_B if target == "fresh-b" else draw(st.sampled_from([PROJECT_A, PROJECT_B]))
    batches = [draw(batch(PLACEHOLDER, project, 0))]
    if draw(st.booleans()):
        batches.append(draw(batch(PLACEHOLDER, project, draw(st.sampled_from([0, 3, 6, 100])))))
    return {"role": role, "target": target, "status": status, "standing": standing, "project": project,
            "batches": batches}


def _check(world: World, example: dict[str, Any]) -> None:
    store, role = world.store, example["role"]
    target = example["target"]
    if target == "standing-a":
        run_id = world.standing_a[example["standing"]]
    elif target in ("fresh-a", "fresh-b"):
        run_id = launched(store, PROJECT_A if target == "fresh-a" else PROJECT_B, example["status"])
    else:
        run_id = new_ulid()
    note(f"{role} sends to a {target} run {run_id} ({example['status'].value} if fresh)")
    before = observed(store, run_id)
    standing_before = {r: observed(store, r) for r in world.standing_a}
    runs_a_before = runs_of(store, PROJECT_A)
    a_texts = [SECRET_A, *(r for r in runs_a_before)]
    for sent in example["batches"]:
        sent_id = run_id if sent.run_id == PLACEHOLDER else sent.run_id
        answer = world.client.post("/api/v1/ingest", content=sent.content(run_id),
                                   headers=headers(world, role, sent.deflated))
        code = answer.status_code
        OUTCOMES[f"{role}: {code}"] += 1
        if code >= 400:
            OUTCOMES[f"{code}: {re.sub('[0-9A-Z]{26}', '<id>', answer.json()['error'])[:60]}"] += 1
        shown = f"{code} {answer.text[:500]!r} for {role} on {target} {example['status']}: {sent}"
        assert code not in (500, 503), shown
        assert code in (200, 400, 401, 403, 404, 409, 413, 422), shown
        if code != 200:
            message = answer.json()["error"]
            assert message and "internal error" not in message, shown
            assert len(answer.text) < 2000, shown  # a long value is not echoed back
            assert not PYTHON_ERROR.search(message), shown  # says what is wrong, in words
        if role in ("none", "reader"):
            assert code in (401, 403), shown
        if role == "writer-b":
            # Nothing of A comes back: not its secret text, not its run ids (but the one the token sent).
            text = answer.text if code != 200 else repr(msgpack.unpackb(answer.content))
            assert not any(a in text for a in a_texts if a != sent_id), shown
            if code == 200:
                number = msgpack.unpackb(answer.content)["run_number"]
                assert number is None or store.get_run(number).project == PROJECT_B, shown
            cursor = world.client.get("/api/v1/ingest/cursor", params={"run": run_id, "writer": "w1"},
                                      headers=headers(world, role))
            if run_id in runs_a_before:
                assert cursor.json()["cursor"] == -1, cursor.text
    after = observed(store, run_id)
    if role in ("none", "reader") or (role == "writer-b" and run_id in runs_a_before) \
            or (role == "writer-a" and before is not None and before[0].project != PROJECT_A):
        assert after == before, f"{role} changed run {run_id}: {before} -> {after}"
    if role in ("none", "reader", "writer-b"):
        assert {r: observed(store, r) for r in world.standing_a} == standing_before, role
        assert runs_of(store, PROJECT_A) == runs_a_before, f"{role} created a run in project A"
    if role == "writer-a":
        assert after is None or after[0].project == PROJECT_A or before is not None
    if before is None:
        assert after is None or after[0].status in {S.RUNNING, *END_STATUSES}, after
    elif after is not None:
        old, new = before[0].status, after[0].status
        assert may_move(old, new), f"run {run_id} went from {old.value} to {new.value} by its records ({role})"
        assert after[0].project == before[0].project


def _examples() -> int:
    return EXAMPLES or 60


# A numpy warning in the server is a value it mangled (a NaN time cast to an integer): make it a 500.
@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_random_ingest_batches_with_every_role_never_500_never_move_a_run_illegally_never_cross_projects(
        world: World) -> None:
    @_seeded
    @settings(max_examples=_examples(), deadline=None, derandomize=not HUNTING, database=None,
              suppress_health_check=list(HealthCheck), print_blob=HUNTING)
    @given(scenario())
    def check(example: dict[str, Any]) -> None:
        _check(world, example)

    check()
    if HUNTING:
        print("\n".join(f"{n:6} {what}" for what, n in OUTCOMES.most_common()))
