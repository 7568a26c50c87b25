"""The SDK as a script uses it, in this process: validation at once, values recorded exactly."""

from __future__ import annotations

import math
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

import runyard
from runyard.errors import ArtifactPathError, InvalidArgument


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RUNYARD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RUNYARD_STRICT", "1")
    monkeypatch.setenv("RUNYARD_SYSTEM_INTERVAL", "0")
    monkeypatch.chdir(tmp_path)
    for key in ("RUNYARD_RUN_ID", "RUNYARD_DB", "RUNYARD_SERVER", "RUNYARD_CAPTURED"):
        monkeypatch.delenv(key, raising=False)
    return tmp_path / "home"


def test_a_bad_value_raises_in_the_caller_naming_the_key(home: Path) -> None:
    run = runyard.init(project="p")
    try:
        with pytest.raises(TypeError, match="metric 'acc' must be a number, not str"):
            run.log({"loss": 1.0, "acc": "high"})
        with pytest.raises(TypeError, match="mapping"):
            run.log([1.0])  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="step must be an integer"):
            run.log({"loss": 1.0}, step=1.5)
        with pytest.raises(InvalidArgument, match="invalid metric name"):
            run.log({"bad\nname": 1.0})
        with pytest.raises(InvalidArgument, match="invalid label"):
            run.label("-x")
        with pytest.raises(ArtifactPathError):
            run.log_artifact(Path(__file__), name="../escape")
    finally:
        run.finish()
    with pytest.raises(InvalidArgument, match="invalid run name"):
        runyard.init(name="a/b")


def test_what_is_logged_is_what_is_read_back(home: Path) -> None:
    steps = 5_000
    with runyard.init(project="exact", name="exact", config={"lr": 0.01}, labels=["baseline"], notes="first") as run:
        rng = np.random.default_rng(0)
        values = rng.normal(size=steps)
        values[10], values[11], values[12] = math.nan, math.inf, -math.inf
        for i in range(steps):
            run.log({"loss": float(values[i]), "count": i, "np": np.float32(0.5), "t": np.array(2.0)})
        run.log({"late": 1.0}, step=100)  # an explicit step
        run.config["batch"] = 64
        run.summary["best"] = 0.9
        run.note("tried *wider* layers")
        run.label("wide")
        run.unlabel("baseline")
        print("a line for the log")
    api = runyard.Api()
    r = api.run("exact")
    h = r.history("loss")
    assert h.step.tolist() == list(range(steps))
    assert np.array_equal(h.value, values, equal_nan=True)  # NaN and infinities kept as such
    assert np.isinf(h.value[11]) and h.value[12] < 0
    assert r.history("count").value.tolist() == [float(i) for i in range(steps)]
    assert r.history("late").step.tolist() == [100]
    assert set(r.history("np").value.tolist()) == {0.5}
    assert r.status.value == "finished" and r.project == "exact"
    assert r.config == {"lr": 0.01, "batch": 64}
    assert r.summary["best"] == 0.9 and r.summary["count"] == steps - 1
    assert r.notes == "first\n\ntried *wider* layers"
    assert r.labels == ("wide",)
    assert "a line for the log" in [line.text for line in r.logs()]
    env = r.envelope("loss", buckets=10)
    assert int(env.count.sum()) == steps and int(env.nan_count.sum()) == 1
    frame = r.history("loss", as_frame=True)
    assert list(frame.columns) == ["step", "time", "value"] and len(frame) == steps
    assert [v.name for v in api.runs(project="exact", labels=["wide"], status="finished")] == ["exact"]
    api.close()


def test_sets_of_names_that_come_and_go_are_all_read_back_exactly(home: Path) -> None:
    # log() makes a function per set of names (sdk/shaped.py): switching between sets, changing a
    # value's type, going past how many sets get one, must all read back as logged.
    wide = {f"layer{i}/grad_norm": 0.0 for i in range(80)}  # more names than a function is made for
    expected: dict[str, list[tuple[int, float]]] = {}
    with runyard.init(project="shapes", name="shapes") as run:
        for step in range(400):
            if step % 3 == 0:
                metrics: dict[str, object] = {"loss": 1.0 / (step + 1), "acc": step * 1e-3}
            elif step % 3 == 1:
                metrics = {"val/loss": float(step), "loss": 0.5}
            else:
                metrics = {"loss": 2.0, "acc": 1 if step % 2 else 0.25}  # an int now and then
            if step % 50 == 0:
                metrics = {**wide, "loss": 3.0}
            if step % 7 == 0:
                metrics = {f"once/{step}": 1.5, "loss": 4.0}  # a new set each time: more than get one
            run.log(metrics, step=step)
            for key, value in metrics.items():
                expected.setdefault(key, []).append((step, float(value)))  # type: ignore[arg-type]
    r = runyard.Api().run("shapes")
    for key, points in expected.items():
        h = r.history(key)
        assert list(zip(h.step.tolist(), h.value.tolist(), strict=True)) == points, key


def test_artifacts_are_copied_as_they_were(home: Path, tmp_path: Path) -> None:
    ckpt = tmp_path / "model.bin"
    ckpt.write_bytes(b"weights-v1")
    folder = tmp_path / "outputs"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "a.txt").write_text("a")
    with runyard.init(project="art") as run:
        run.log_artifact(ckpt)
        run.log_artifact(folder, name="out")
    ckpt.write_bytes(b"weights-v2")  # changed after the run: the run keeps v1
    api = runyard.Api()
    r = api.run(run.id)
    paths = {a.path: a for a in r.artifacts()}
    assert set(paths) == {"model.bin", "out/sub/a.txt"}
    assert api._opened.artifacts.read_bytes(paths["model.bin"].content_ref) == b"weights-v1"
    api.close()


def test_logging_after_finish_warns_and_records_nothing(home: Path) -> None:
    run = runyard.init(project="p")
    run.finish()
    with pytest.warns(UserWarning, match="is finished"):
        run.log({"loss": 1.0})
    assert runyard.current_run() is None


def test_an_exception_in_a_with_block_fails_the_run_and_keeps_the_traceback(home: Path) -> None:
    with pytest.raises(RuntimeError, match="diverged"), runyard.init(project="p", name="boom") as run:
        run.log({"loss": 1.0})
        raise RuntimeError("diverged")
    api = runyard.Api()
    r = api.run("boom")
    assert r.status.value == "failed"
    assert any("RuntimeError: diverged" in line.text for line in r.logs())
    api.close()


def test_a_forked_child_logs_nothing_and_leaves_the_run_alone(home: Path) -> None:
    import os

    run = runyard.init(project="p", name="parent")
    pid = os.fork()
    if pid == 0:  # the child: logging is a no-op, not an error
        try:
            run.log({"from_child": 1.0})
            os._exit(0 if runyard.current_run() is None else 3)
        except BaseException:  # noqa: BLE001 - a child must never return into pytest
            os._exit(4)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    run.log({"from_parent": 1.0})
    run.finish()
    api = runyard.Api()
    assert [s.key for s in api.run("parent").metrics()] == ["from_parent"]
    api.close()


def test_run_alert_checks_the_rule_at_once_and_the_rule_fires_on_this_run_only(home: Path) -> None:
    with runyard.init(project="p", name="guarded") as run:
        with pytest.raises(InvalidArgument, match=r"run\.alert\(\): rule 'dip': when = 'drop' needs by"):
            run.alert("dip", "drop", metric="acc")
        with pytest.raises(InvalidArgument, match="when must be one of"):
            run.alert("x", "sometimes")
        run.alert("loss-nan", "nan", metric="loss", notify=("inbox",))
        run.alert("flat", "plateau", metric="loss", steps=np.int64(500), epsilon=np.array(1e-4))
        run.alert("acc-low", "below", metric="acc", value=np.float64(0.2))
        run.alert("acc-low", "below", metric="acc", value=0.5)  # replaces the rule of that name
        run.log({"loss": 1.0, "acc": 0.4})
        run.log({"loss": math.nan, "acc": 0.6})
    with runyard.init(project="p", name="unguarded") as other:
        other.log({"loss": math.nan, "acc": 0.1})
    api = runyard.Api()
    guarded, unguarded = api.run("guarded").number, api.run("unguarded").number
    rules = api.store.list_alert_rules(run=guarded)
    assert [(r.name, r.kind, r.spec.get("value"), r.source) for r in rules] == [
        ("loss-nan", "nan", None, "run.alert"), ("flat", "plateau", None, "run.alert"),
        ("acc-low", "below", 0.5, "run.alert")]
    assert (rules[1].spec["steps"], rules[1].spec["epsilon"]) == (500, 1e-4)  # numpy values, kept as numbers
    events = sorted((e.run, e.kind, e.step) for e in api.store.list_alert_events())
    assert events == sorted([(guarded, "below", 0), (guarded, "nan", 1)])  # none for the other run
    assert unguarded not in {e[0] for e in events}
    api.close()


def test_every_key_and_value_is_checked_whatever_comes_first(home: Path) -> None:
    # Validation used to stop at the first value that was not a float: the bad key after it got in,
    # and the ingester then failed on it for the whole home.
    run = runyard.init(project="p", name="checked")
    try:
        with pytest.raises(TypeError, match="metric names must be strings, not int"):
            run.log({"a": 1, 5: 2.0})  # type: ignore[dict-item]
        with pytest.raises(TypeError, match="metric 'b' must be a number, not str"):
            run.log({"a": 1.0, "b": "x"})
        with pytest.raises(TypeError, match="metric 'c' must be a number"):
            run.log({"a": 1, "c": [1.0]})
        with pytest.raises(TypeError, match="metric 'd' must be a single number, not an array"):
            run.log({"d": np.zeros(3)})
        run.log({"a": 1.0})
    finally:
        run.finish()
    api = runyard.Api()
    r = api.run("checked")
    assert [s.key for s in r.metrics()] == ["a"]
    assert r.history("a").step.tolist() == [0]  # refused calls took no step
    api.close()


class StandInTensor:
    """A 0-d tensor as a GPU gives it: reading its value waits (here 1 ms) for the device."""

    reads: ClassVar[list[int]] = []

    def __init__(self, value: float) -> None:
        self.value = value

    def numel(self) -> int:
        return 1

    def detach(self) -> StandInTensor:
        return self

    def item(self) -> float:
        import threading
        import time

        StandInTensor.reads.append(threading.get_ident())
        time.sleep(0.001)
        return self.value


def test_a_tensor_is_read_off_the_training_thread_and_lands_in_order(home: Path) -> None:
    import threading

    StandInTensor.reads.clear()
    with runyard.init(project="p", name="tensors") as run:
        for step in range(200):
            if step % 50 == 49:
                run.log({"loss": float(step), "lr": 0.1})  # floats between tensors keep their place
            else:
                run.log({"loss": StandInTensor(float(step)), "lr": 0.1})
        assert run.summary["loss"] == 199.0  # the summary waits for nothing and sees them all
    assert StandInTensor.reads and threading.get_ident() not in StandInTensor.reads
    api = runyard.Api()
    h = api.run("tensors").history("loss")
    assert h.step.tolist() == list(range(200)) and h.value.tolist() == [float(s) for s in range(200)]
    with pytest.raises(TypeError, match="single number, not a tensor of 3 elements"):
        bad = StandInTensor(1.0)
        bad.numel = lambda: 3  # type: ignore[method-assign]
        runyard.init(project="p").log({"x": bad})
    runyard.finish()
    api.close()


def test_tensors_waiting_to_be_read_are_bounded_by_queue_limit(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A device slower than the loop: the values waiting stay within queue_limit (the caller reads
    # them itself when conversion falls that far behind), and every one reaches the store.
    monkeypatch.setenv("RUNYARD_QUEUE_LIMIT", "1000")
    most = 0
    with runyard.init(project="p", name="slow-device") as run:
        for step in range(3000):
            run.log({"loss": StandInTensor(float(step))})
            most = max(most, run._writer.pending())
    assert most <= 1000
    api = runyard.Api()
    assert api.run("slow-device").history("loss").value.tolist() == [float(s) for s in range(3000)]
    api.close()
