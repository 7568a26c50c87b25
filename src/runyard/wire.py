"""The HTTP API's data forms (v1), shared by the server and the client.

Store values cross the wire as JSON objects with the same field names as the store's dataclasses,
so a client rebuilds exactly what a local store returns (the CLI prints the same either way).
NaN and the infinities travel as the strings "NaN", "Infinity", "-Infinity" (``jsonvalues.public``;
read back as floats where a number is expected: summaries, metric values); metric points
travel as msgpack with raw little-endian arrays, because JSON would multiply their size.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import TYPE_CHECKING, Any

from runyard.types import RunKind, RunStatus

if TYPE_CHECKING:
    from runyard.store.api import (
        AlertEvent,
        AlertRule,
        ArtifactEntry,
        LogLine,
        Model,
        ModelVersion,
        Page,
        Project,
        Run,
        RunInput,
        SeriesInfo,
    )
    from runyard.store.series import Envelope, Points

API_PREFIX = "/api/v1"
MSGPACK = "application/msgpack"
#: The ingest body: a msgpack map compressed with zlib (this header says so).
ENCODING_DEFLATE = "deflate"


def pack_ingest(run_id: str, writer: str, recs: Any) -> bytes:
    """The ingest body before compression: a writer's records, as readers see them (spool/records.py)."""
    import msgpack

    return bytes(msgpack.packb({"run_id": run_id, "writer": writer, "items": list(recs)}, use_bin_type=True))


def deflate(packed: bytes) -> bytes:
    """Compression of an ingest body (sent with ``content-encoding: deflate``): level 1, the cheapest."""
    import zlib

    return zlib.compress(packed, 1)


def plain(value: Any) -> Any:
    """JSON-safe form of a value: NaN and the infinities as strings (see store/jsonvalues.py)."""
    from runyard.store.jsonvalues import public

    return public(value)


def _unplain(value: Any) -> Any:
    """Numbers back from ``plain``: the strings "NaN", "Infinity", "-Infinity" as floats."""
    from runyard.store.jsonvalues import numbers_from_public

    return numbers_from_public(value)


def _untag(value: Any) -> Any:
    """Values that are not only numbers (config, environment): an older server's tags as floats, strings kept."""
    from runyard.store.jsonvalues import from_plain

    return from_plain(value)


def run_out(run: Run) -> dict[str, Any]:
    # Field by field, not dataclasses.asdict: that deep-copies every config, and a runs table asks
    # for 10,000 runs at once. ``plain`` copies what it changes.
    data = {name: getattr(run, name) for name in _run_fields()}
    data["status"] = run.status.value
    data["kind"] = run.kind.value
    data["labels"] = list(run.labels)
    for key in ("config", "summary", "environment", "resources", "launch"):
        data[key] = plain(data[key])
    return data


@functools.cache
def _run_fields() -> tuple[str, ...]:
    from runyard.store.api import Run

    return tuple(f.name for f in dataclasses.fields(Run))


def masked(data: dict[str, Any]) -> dict[str, Any]:
    """A run (in ``run_out`` form) as every caller of the API sees it: credentials in its launch record,
    command and git remote masked (``runyard.redact``). The store keeps the launch record as it was:
    reruns are made from the store, on the server, never from what a client was sent."""
    from runyard import redact

    return redact.run_data(data)


def hide_env(data: dict[str, Any]) -> None:
    """Replace the values of a run's ``--env`` variables (in ``run_out`` form) by a marker."""
    launch = data.get("launch")
    if isinstance(launch, dict) and isinstance(launch.get("env"), dict):
        launch = data["launch"] = {**launch, "env": {key: "(hidden)" for key in launch["env"]}}  # a copy
    if isinstance(launch, dict) and "notify" in launch:  # webhook URLs and SMTP passwords are secrets too
        data["launch"] = {**launch, "notify": "(hidden)"}


def run_in(data: dict[str, Any]) -> Run:
    from runyard.store.api import Run

    fields = {f.name for f in dataclasses.fields(Run)}
    values = {k: v for k, v in data.items() if k in fields}
    values["status"] = RunStatus(values["status"])
    # A server older than run kinds sends none: its runs are scripts. A newer server's kind this
    # client does not know reads as a script too (its command says what it runs), not as an error.
    kind = values.get("kind") or RunKind.SCRIPT.value
    values["kind"] = RunKind(kind) if kind in RunKind._value2member_map_ else RunKind.SCRIPT
    values["labels"] = tuple(values.get("labels") or ())
    for key in ("config", "environment", "resources", "launch"):
        values[key] = _untag(values.get(key))
    values["summary"] = _unplain(values.get("summary"))
    if values.get("launch") is None:
        values["launch"] = None
    return Run(**values)


def page_in(data: dict[str, Any]) -> Page[Run]:
    from runyard.store.api import Page

    return Page([run_in(r) for r in data["items"]], data.get("next_cursor"))


def plain_out(value: Project | SeriesInfo | LogLine | ArtifactEntry | RunInput | AlertEvent | AlertRule
              ) -> dict[str, Any]:
    return {k: plain(v) for k, v in dataclasses.asdict(value).items()}


def project_in(data: dict[str, Any]) -> Project:
    from runyard.store.api import Project

    return Project(**data)


def series_in(data: dict[str, Any]) -> SeriesInfo:
    from runyard.store.api import SeriesInfo

    return SeriesInfo(**{**data, "last_value": _unplain(data.get("last_value"))})


def log_in(data: dict[str, Any]) -> LogLine:
    from runyard.store.api import LogLine

    return LogLine(**data)


def artifact_in(data: dict[str, Any]) -> ArtifactEntry:
    from runyard.store.api import ArtifactEntry

    return ArtifactEntry(**data)


def input_in(data: dict[str, Any]) -> RunInput:
    from runyard.store.api import RunInput

    return RunInput(**data)


def alert_rule_in(data: dict[str, Any]) -> AlertRule:
    from runyard.store.api import AlertRule

    return AlertRule(**{**data, "notify": tuple(data.get("notify") or ())})


def alert_event_in(data: dict[str, Any]) -> AlertEvent:
    from runyard.store.api import AlertEvent

    return AlertEvent(**{"delivery": {}, **data, "value": _unplain(data.get("value"))})


def model_version_out(version: ModelVersion) -> dict[str, Any]:
    return {**dataclasses.asdict(version), "aliases": list(version.aliases)}


def model_version_in(data: dict[str, Any]) -> ModelVersion:
    from runyard.store.api import ModelVersion

    fields = {f.name for f in dataclasses.fields(ModelVersion)}
    values = {k: v for k, v in data.items() if k in fields}  # a newer server's fields are not this client's
    return ModelVersion(**{**values, "aliases": tuple(values.get("aliases") or ())})


def model_out(model: Model) -> dict[str, Any]:
    return {"name": model.name, "created_at": model.created_at, "latest": model_version_out(model.latest),
            "aliases": dict(model.aliases)}


def model_in(data: dict[str, Any]) -> Model:
    from runyard.store.api import Model

    return Model(data["name"], data["created_at"], model_version_in(data["latest"]),
                 {str(k): int(v) for k, v in (data.get("aliases") or {}).items()})


ENVELOPE_FIELDS = ("start_step", "end_step", "count", "nan_count", "min", "max", "mean", "last")


def envelope_out(envelope: Envelope) -> dict[str, Any]:
    """Columns, one entry per bucket; non-finite floats as strings (see jsonvalues)."""
    return {name: plain(getattr(envelope, name).tolist()) for name in ENVELOPE_FIELDS}


def envelope_in(data: dict[str, Any]) -> Envelope:
    import numpy as np

    from runyard.store.series import Envelope

    columns: dict[str, Any] = {}
    for name in ENVELOPE_FIELDS:
        integral = name in ("start_step", "end_step", "count", "nan_count")
        columns[name] = np.asarray(_unplain(data[name]), dtype=np.int64 if integral else np.float64)
    return Envelope(**columns)


def points_out(points: Points) -> dict[str, bytes]:
    return {"step": points.steps.astype("<i8").tobytes(), "time": points.times.astype("<f8").tobytes(),
            "value": points.values.astype("<f8").tobytes()}


def points_in(data: dict[str, Any]) -> Points:
    import numpy as np

    from runyard.store.series import Points

    return Points(np.frombuffer(data["step"], "<i8").astype(np.int64), np.frombuffer(data["time"], "<f8").copy(),
                  np.frombuffer(data["value"], "<f8").copy())


def url_host(host: str) -> str:
    """A host as a URL writes it: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host else host


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, an IPv6 one bracketed or not) is this machine's
    loopback: what the server binds to by default, and what a model server should stay on."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
