"""Rules evaluated on the ingest stream: points and state changes in, fired alerts out.

Pure: no I/O. The ingester calls ``on_points`` and ``on_status`` with what it has just applied and
``on_tick`` now and then (for rules about time passing: stalled, gpu_idle). What a rule needs to
remember (best value so far, when the GPU went idle, when it last fired) lives in this object, per
(rule, run), as plain values (``states_of``, ``set_states``) that the ingester keeps in the store,
so that a restart or another ingester continues from them (ingest/alerting.py). A rule fires at
most once per run within its cooldown (1 hour by default), so a drop is said once, not on every
later point.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from runyard.alerts.spec import STATE_KINDS

GPU_UTIL = "utilization"  # system/gpu<i>/utilization, see sdk/sampler.py
MEMORY = "system/memory_percent"


@dataclass(frozen=True)
class Fired:
    """A rule that fired for a run."""

    rule: Any  # store.api.AlertRule
    run: int
    message: str
    time: float
    metric: str | None = None
    step: int | None = None
    value: float | None = None


@dataclass
class _State:
    best: float | None = None
    best_step: int | None = None
    since: float | None = None  # gpu_idle: when utilisation went below the value
    fired_at: float | None = None

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> _State:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class Evaluator:
    rules: Sequence[Any] = ()
    #: What each rule remembers, per run: run -> rule id -> state.
    _state: dict[int, dict[int, _State]] = field(default_factory=dict)
    #: Last metric point or log line per run (for ``stalled``), by wall time.
    _activity: dict[int, float] = field(default_factory=dict)

    def applies(self, rule: Any, run: int, project: str) -> bool:
        return rule.enabled and (rule.run is None or rule.run == run) and (rule.project in (None, project))

    def states_of(self, run: int) -> dict[int, dict[str, Any]]:
        """What the rules remember about ``run``, as plain values (a copy): rule id -> state."""
        return {rule_id: asdict(state) for rule_id, state in self._state.get(run, {}).items()}

    @staticmethod
    def blank() -> dict[str, Any]:
        """A rule's memory before it has seen anything (``states_of``'s form)."""
        return asdict(_State())

    def set_states(self, run: int, states: Mapping[int, Mapping[str, Any]]) -> None:
        """Replace what the rules remember about ``run`` (``states_of``'s form; a rule absent starts afresh)."""
        self._state[run] = {rule_id: _State.of(data) for rule_id, data in states.items()}

    def _state_of(self, rule: Any, run: int) -> _State:
        return self._state.setdefault(run, {}).setdefault(rule.id, _State())

    def _fire(self, rule: Any, run: int, now: float, message: str, at: float | None = None,
              **where: Any) -> list[Fired]:
        """Fire unless within the cooldown. ``at``: the point's own time, for rules on points: the
        cooldown is then measured in the run's time, so how records happen to be batched (an ingester
        catching up, two points in one batch) changes nothing."""
        state = self._state_of(rule, run)
        clock = now if at is None else at
        if state.fired_at is not None and clock - state.fired_at < float(rule.spec.get("cooldown", 3600.0)):
            return []
        state.fired_at = clock
        return [Fired(rule, run, f"{rule.name}: {message}", now, **where)]

    def on_points(self, run: int, project: str, series: dict[str, Any], now: float) -> list[Fired]:
        """New points of a run: ``series`` maps metric keys to objects with ``steps``, ``times`` and
        ``values`` arrays (store.series.Points)."""
        if series:
            self._activity[run] = now
        out: list[Fired] = []
        for rule in self.rules:
            if rule.kind in STATE_KINDS or rule.kind == "stalled" or not self.applies(rule, run, project):
                continue
            for key, points in series.items():
                if not self._watches(rule, key):
                    continue
                out += self._check(rule, run, key, points.steps.tolist(), points.times.tolist(),
                                   points.values.tolist(), now)
        return out

    def _watches(self, rule: Any, key: str) -> bool:
        if rule.kind == "gpu_idle":
            return key.startswith("system/gpu") and key.endswith("/" + GPU_UTIL)
        if rule.kind == "memory":
            return bool(key == rule.spec.get("metric", MEMORY))
        metric = rule.spec.get("metric")
        if metric is None:  # nan without a metric: any metric the user logged
            return not key.startswith("system/")
        return bool(key == metric)

    def _check(self, rule: Any, run: int, key: str, steps: list[int], times: list[float], values: list[float],
               now: float) -> list[Fired]:
        spec, kind = rule.spec, rule.kind
        state = self._state_of(rule, run)
        fired: list[Fired] = []
        for step, at, value in zip(steps, times, values, strict=True):
            hit: str | None = None
            if kind == "nan" and not math.isfinite(value):
                hit = f"{key} is {value} at step {step}"
            elif kind == "above" and value > spec["value"]:
                hit = f"{key} = {value:g} at step {step}, above {spec['value']:g}"
            elif kind == "below" and value < spec["value"]:
                hit = f"{key} = {value:g} at step {step}, below {spec['value']:g}"
            elif kind == "memory" and value > spec["value"]:
                hit = f"memory at {value:.0f}%, above {spec['value']:g}%"
            elif kind == "drop" and math.isfinite(value):
                hit = self._drop(state, spec, key, step, value)
            elif kind == "plateau" and math.isfinite(value):
                hit = self._plateau(state, spec, key, step, value)
            elif kind == "gpu_idle":
                hit = self._idle(state, spec, key, at, value)
            if hit is not None:
                # Read on after a fire: later points still move the rule's memory (a new best).
                fired += self._fire(rule, run, now, hit, at=at, metric=key, step=step, value=value)
        return fired

    @staticmethod
    def _drop(state: _State, spec: dict[str, Any], key: str, step: int, value: float) -> str | None:
        if state.best is None or value > state.best:
            state.best, state.best_step = value, step
            return None
        allowed = abs(state.best) * spec["by"] if spec.get("percent") else spec["by"]
        if state.best - value > allowed:
            by = f"{spec['by'] * 100:g}%" if spec.get("percent") else f"{spec['by']:g}"
            return (f"{key} = {value:g} at step {step}, more than {by} below its best {state.best:g} "
                    f"(step {state.best_step})")
        return None

    @staticmethod
    def _plateau(state: _State, spec: dict[str, Any], key: str, step: int, value: float) -> str | None:
        epsilon = float(spec.get("epsilon", 0.0))
        higher = spec.get("mode") == "max"
        improved = state.best is None or (value > state.best + epsilon if higher else value < state.best - epsilon)
        if improved:
            state.best, state.best_step = value, step
            return None
        if state.best_step is not None and step - state.best_step >= spec["steps"]:
            return (f"{key} has not improved beyond {state.best:g} (step {state.best_step}) "
                    f"for {step - state.best_step} steps")
        return None

    @staticmethod
    def _idle(state: _State, spec: dict[str, Any], key: str, at: float, value: float) -> str | None:
        if value >= spec["value"]:
            state.since = None
            return None
        if state.since is None:
            state.since = at
        if at - state.since >= spec["for"]:
            return f"{key.split('/')[1]} below {spec['value']:g}% for {(at - state.since) / 60:.0f} min"
        return None

    def on_logs(self, run: int, now: float) -> None:
        self._activity[run] = now

    def on_status(self, run: int, project: str, status: str, now: float, message: str | None = None) -> list[Fired]:
        """A run reached a final state (failed, finished, lost, ...)."""
        self._activity.pop(run, None)
        out: list[Fired] = []
        for rule in self.rules:
            if rule.kind == status and self.applies(rule, run, project):
                out += self._fire(rule, run, now, f"run {run} {status}" + (f": {message}" if message else ""))
        return out

    def on_tick(self, active: Iterable[tuple[int, str]], now: float,
                seen: Mapping[int, float] | None = None) -> list[Fired]:
        """Rules about time passing, for the runs still running: (number, project) pairs. ``seen``:
        when each run last logged, as the store knows it (another process may have applied it)."""
        out: list[Fired] = []
        for run, project in active:
            stored = (seen or {}).get(run)
            if stored is not None and stored > self._activity.get(run, -math.inf):
                self._activity[run] = stored
            last = self._activity.setdefault(run, now)  # first seen now: the clock starts here
            for rule in self.rules:
                if rule.kind == "stalled" and self.applies(rule, run, project) and now - last >= rule.spec["for"]:
                    out += self._fire(rule, run, now, f"no metric point or log line for {(now - last) / 60:.0f} min")
        return out
