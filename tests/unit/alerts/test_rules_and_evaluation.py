"""Alert rules: checked where they are written, evaluated on points as ingest applies them."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import numpy as np
import pytest

from runyard.alerts.evaluate import Evaluator
from runyard.alerts.rules import check, load_file
from runyard.errors import ConfigError
from runyard.store.api import AlertRule
from runyard.store.series import Points


def rule(rule_id: int = 1, **fields: object) -> AlertRule:
    base = check({"name": "r", **fields}, "test")
    return AlertRule(base.name, base.kind, base.spec, base.action, base.notify, base.project, base.run, True,
                     base.source, rule_id)


def pts(steps: list[int], values: list[float]) -> Points:
    s = np.asarray(steps, dtype=np.int64)
    return Points.of(s, 1000.0 + s.astype(np.float64), np.asarray(values, dtype=np.float64))


def test_a_malformed_rule_in_runyard_toml_is_reported_with_its_file_line_and_fault(tmp_path: Path) -> None:
    path = tmp_path / "runyard.toml"
    path.write_text(textwrap.dedent("""
        [[alerts]]
        name = "loss-nan"
        when = "nan"
        metric = "loss"
        action = "stop"

        [[alerts]]
        name = "acc-drop"
        when = "drop"
        metric = "val/acc"
    """))
    with pytest.raises(ConfigError) as e:
        load_file(path)
    assert str(e.value) == f"{path}:8: rule 'acc-drop': when = 'drop' needs by"
    path.write_text(path.read_text() + 'by = "10%"\nnotify = ["pager"]\n')
    with pytest.raises(ConfigError, match=r":8: rule 'acc-drop': notify must list channels among"):
        load_file(path)
    path.write_text(path.read_text().replace('notify = ["pager"]', 'notify = ["inbox", "webhook"]'))
    rules = load_file(path, project="gan")
    assert [(r.name, r.kind, r.action, r.project) for r in rules] == [("loss-nan", "nan", "stop", "gan"),
                                                                     ("acc-drop", "drop", "notify", "gan")]
    assert rules[1].spec["by"] == pytest.approx(0.1) and rules[1].spec["percent"] is True
    assert rules[1].source == f"{path}:8"
    for bad, message in (({"when": "stalled", "for": "soon"}, "for must be a duration"),
                         ({"when": "plateau", "metric": "l", "steps": 0}, "steps must be a whole number"),
                         ({"when": "sometimes"}, "when must be one of"), ({"when": "nan", "colour": 1}, "unknown key")):
        with pytest.raises(ConfigError, match=message):
            check({"name": "x", **bad}, "cli")


def test_nan_and_inf_fire_and_a_stop_rule_says_so() -> None:
    ev = Evaluator([rule(when="nan", metric="loss", action="stop")])
    assert ev.on_points(7, "p", {"loss": pts([0, 1], [1.0, 0.5])}, now=1.0) == []
    fired = ev.on_points(7, "p", {"loss": pts([2, 3], [math.inf, math.nan])}, now=2.0)
    assert len(fired) == 1 and fired[0].step == 2 and "loss is inf at step 2" in fired[0].message
    assert fired[0].rule.action == "stop" and fired[0].run == 7


def test_a_drop_fires_once_not_on_every_later_point() -> None:
    ev = Evaluator([rule(when="drop", metric="acc", by="10%")])
    assert ev.on_points(1, "p", {"acc": pts([0, 1, 2], [0.5, 0.8, 0.75])}, now=0.0) == []  # 6% below best
    fired = ev.on_points(1, "p", {"acc": pts([3, 4], [0.70, 0.60])}, now=1.0)
    assert len(fired) == 1 and fired[0].step == 3 and "below its best 0.8 (step 1)" in fired[0].message
    for t in range(2, 50):  # later points below the best: said once already
        assert ev.on_points(1, "p", {"acc": pts([t + 3], [0.5])}, now=float(t)) == []
    assert ev.on_points(2, "p", {"acc": pts([0, 1], [0.9, 0.1])}, now=60.0) != []  # another run: its own


def test_plateau_threshold_memory_and_gpu_idle() -> None:
    ev = Evaluator([rule(1, when="plateau", metric="loss", steps=3, epsilon=0.01),
                    rule(2, when="above", metric="loss", value=10),
                    rule(3, when="memory", value=90),
                    rule(4, when="gpu_idle", value=20, **{"for": "2s"})])
    assert ev.on_points(1, "p", {"loss": pts([0, 1, 2], [1.0, 0.9, 0.895])}, now=0.0) == []
    fired = ev.on_points(1, "p", {"loss": pts([3, 4], [0.899, 0.897])}, now=1.0)
    assert [f.rule.id for f in fired] == [1] and "for 3 steps" in fired[0].message
    assert [f.rule.id for f in ev.on_points(1, "p", {"loss": pts([5], [11.0])}, now=2.0)] == [2]
    assert [f.rule.id for f in ev.on_points(1, "p", {"system/memory_percent": pts([0], [95.0])}, now=3.0)] == [3]
    gpu = "system/gpu0/utilization"
    assert ev.on_points(1, "p", {gpu: pts([0, 1], [5.0, 3.0])}, now=4.0) == []  # idle for 1 s so far
    assert ev.on_points(1, "p", {gpu: pts([2], [50.0])}, now=5.0) == []  # busy again: the clock restarts
    assert [f.rule.id for f in ev.on_points(1, "p", {gpu: pts([3, 4, 5], [1.0, 1.0, 1.0])}, now=6.0)] == [4]


def test_stalled_state_and_scope() -> None:
    ev = Evaluator([rule(1, when="stalled", **{"for": "10m"}), rule(2, when="failed"),
                    check({"name": "only-gan", "when": "finished"}, "t", project="gan")])
    assert ev.on_tick([(1, "p")], now=0.0) == []
    ev.on_logs(1, now=300.0)  # a log line: still alive
    assert ev.on_tick([(1, "p")], now=800.0) == []
    assert [f.rule.id for f in ev.on_tick([(1, "p")], now=901.0)] == [1]
    assert [f.rule.id for f in ev.on_status(1, "p", "failed", now=902.0, message="exit 3")] == [2]
    assert ev.on_status(1, "p", "finished", now=903.0) == []  # the finished rule is for project gan only
    assert len(ev.on_status(2, "gan", "finished", now=904.0)) == 1


def test_the_cooldown_runs_in_the_run_s_time_so_batching_changes_nothing() -> None:
    nan = math.nan
    together = Evaluator([rule(when="nan", metric="loss", cooldown="1s")])
    fired = together.on_points(1, "p", {"loss": pts([0, 1, 2, 3], [nan, 1.0, nan, 1.0])}, now=5000.0)
    apart = Evaluator([rule(when="nan", metric="loss", cooldown="1s")])
    one_by_one = [*apart.on_points(1, "p", {"loss": pts([0, 1], [nan, 1.0])}, now=5000.0),
                  *apart.on_points(1, "p", {"loss": pts([2, 3], [nan, 1.0])}, now=5000.0)]
    assert [f.step for f in fired] == [f.step for f in one_by_one] == [0, 2]  # points 2 s apart


def test_a_rule_reads_the_whole_batch_after_it_fires() -> None:
    ev = Evaluator([rule(when="drop", metric="acc", by=0.2, cooldown="1s")])
    fired = ev.on_points(1, "p", {"acc": pts([0, 1, 2, 3], [0.9, 0.5, 0.95, 0.7])}, now=0.0)
    assert [f.step for f in fired] == [1, 3] and "below its best 0.95 (step 2)" in fired[1].message
