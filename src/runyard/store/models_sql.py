"""The model registry in SQL: numbered versions of a named model, each pointing at a run's artifacts
under a path, and aliases (production, staging) naming one version each.

Version numbers come from incrementing ``models.latest_version`` in the registering transaction: on
PostgreSQL the UPDATE locks the model's row until commit, so a concurrent registration waits and
takes the next number; on SQLite the write lock does the same. The primary key (model, version) is
the last word either way. Setting an alias is one upsert, so two writers moving it race to a winner,
never to an error or a second row.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from runyard.errors import InvalidArgument, NotFound
from runyard.names import LATEST, is_number, validate_model_alias, validate_model_name, validate_relpath
from runyard.store import artifacts_sql, limits, runs_sql
from runyard.store.api import Model, ModelVersion, entries_digest, entries_under
from runyard.store.schema import model_aliases, model_versions, models, runs

_M = models.c
_V = model_versions.c
_A = model_aliases.c
#: How many names an error lists before "...".
_SHOWN = 20


def clean_path(path: str) -> str:
    """A version's path as stored: relative to the run, no leading or trailing slash; "" or "." for all."""
    text = path.strip().strip("/")
    if text in ("", "."):
        return ""
    return validate_relpath(text)


def register(conn: Connection, name: str, run: int, path: str, description: str, registered_by: str,
             aliases: Sequence[str], clock: Callable[[], float]) -> ModelVersion:
    """Record the next version of ``name`` (created if new) pointing at ``run``'s artifacts under ``path``."""
    validate_model_name(name)
    wanted = sorted({validate_model_alias(a) for a in aliases})
    path = clean_path(path)
    runs_sql.require_run(conn, run)
    named = entries_under(artifacts_sql.list_artifacts(conn, run, path), path)
    if not named:
        tops = sorted({e.path.split("/")[0] for e in artifacts_sql.list_artifacts(conn, run)})
        shown = ", ".join(tops[:_SHOWN]) + (", ..." if len(tops) > _SHOWN else "") if tops else "none"
        raise NotFound(f"run {run} has no artifact {path or '(any)'} to register (its top-level artifacts: "
                       f"{shown}); give RUN:PATH of a file or directory it stored, as `runyard cp` does")
    run_id = conn.execute(sa.select(runs.c.id).where(runs.c.number == run)).scalar_one()
    now = clock()
    limits.insert_ignore(conn, models, {"name": name, "latest_version": 0, "created_at": now}, ["name"])
    model_id, version = conn.execute(
        sa.update(models).where(_M.name == name).values(latest_version=_M.latest_version + 1)
        .returning(_M.id, _M.latest_version)).one()
    conn.execute(sa.insert(model_versions).values(
        model_id=model_id, version=version, run_number=run, run_id=run_id, path=path,
        digest=entries_digest(named), file_count=len(named), size=sum(e.size for _, e in named),
        description=description, registered_by=registered_by[:200], created_at=now))
    for alias in wanted:
        _set_alias(conn, model_id, alias, version, now)
    return get_version(conn, name, str(version))


def set_alias(conn: Connection, name: str, alias: str, version: int, clock: Callable[[], float]) -> ModelVersion:
    """Point ``alias`` of ``name`` at ``version`` (moving it from wherever it pointed)."""
    validate_model_alias(alias)
    model_id = _model_id(conn, name)
    _require_version(conn, name, model_id, version)
    _set_alias(conn, model_id, alias, version, clock())
    return get_version(conn, name, str(version))


def _set_alias(conn: Connection, model_id: int, alias: str, version: int, now: float) -> None:
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
    statement = insert(model_aliases).values(model_id=model_id, alias=alias, version=version, updated_at=now)
    conn.execute(statement.on_conflict_do_update(
        index_elements=["model_id", "alias"],
        set_={"version": statement.excluded.version, "updated_at": statement.excluded.updated_at}))


def remove_alias(conn: Connection, name: str, alias: str) -> int:
    """Remove ``alias`` of ``name``; the version it named."""
    model_id = _model_id(conn, name)
    version = conn.execute(sa.delete(model_aliases).where(_A.model_id == model_id, _A.alias == alias)
                           .returning(_A.version)).scalar()
    if version is None:
        raise NotFound(f"model {name} has no alias {alias!r} ({_aliases_said(conn, model_id)})")
    return int(version)


def get_version(conn: Connection, name: str, selector: str | None = None) -> ModelVersion:
    """The version of ``name`` that ``selector`` names: None or "latest" the newest, digits a version
    number, anything else an alias."""
    model_id = _model_id(conn, name)
    if selector is None or selector == LATEST:
        version = int(conn.execute(sa.select(_M.latest_version).where(_M.id == model_id)).scalar_one())
    elif is_number(selector):
        version = _require_version(conn, name, model_id, int(selector))
    else:
        found = conn.execute(sa.select(_A.version).where(_A.model_id == model_id, _A.alias == selector)).scalar()
        if found is None:
            raise NotFound(f"model {name} has no alias {selector!r} ({_aliases_said(conn, model_id)}; "
                           f"{_versions_said(conn, model_id)})")
        version = int(found)
    return _versions(conn, name, model_id, version)[0]


def list_versions(conn: Connection, name: str) -> list[ModelVersion]:
    """Every version of ``name``, newest first."""
    return _versions(conn, name, _model_id(conn, name))


def list_models(conn: Connection) -> list[Model]:
    """Every model by name, with its newest version and its aliases."""
    out: list[Model] = []
    for model_id, name, created_at, latest in conn.execute(
            sa.select(_M.id, _M.name, _M.created_at, _M.latest_version).order_by(_M.name)):
        if latest < 1:  # created by a registration that is still in flight on another connection
            continue
        aliases = {alias: int(version) for alias, version in conn.execute(
            sa.select(_A.alias, _A.version).where(_A.model_id == model_id).order_by(_A.alias))}
        out.append(Model(name, created_at, _versions(conn, name, model_id, latest)[0], aliases))
    return out


def registered(conn: Connection, numbers: Sequence[int]) -> dict[int, list[str]]:
    """Of the runs ``numbers``, those model versions point at: run -> ["NAME@VERSION", ...]."""
    found: dict[int, list[str]] = {}
    for chunk in limits.batches(conn, list(numbers)):
        for run, name, version in conn.execute(
                sa.select(_V.run_number, _M.name, _V.version).join(models, _M.id == _V.model_id)
                .where(_V.run_number.in_(list(chunk))).order_by(_M.name, _V.version)):
            found.setdefault(run, []).append(f"{name}@{version}")
    return found


def _versions(conn: Connection, name: str, model_id: int, only: int | None = None) -> list[ModelVersion]:
    query = sa.select(model_versions).where(_V.model_id == model_id)
    if only is not None:
        query = query.where(_V.version == only)
    rows = list(conn.execute(query.order_by(_V.version.desc())))
    held: dict[int, list[str]] = {}
    for alias, version in conn.execute(sa.select(_A.alias, _A.version).where(_A.model_id == model_id)
                                       .order_by(_A.alias)):
        held.setdefault(version, []).append(alias)
    return [ModelVersion(name, r.version, r.run_number, r.run_id, r.path, r.digest, r.file_count, r.size,
                         r.description, r.registered_by, r.created_at, tuple(held.get(r.version, ())))
            for r in rows]


def _model_id(conn: Connection, name: str) -> int:
    if not isinstance(name, str) or not name:
        raise InvalidArgument("empty model name; give the name it was registered under")
    found = conn.execute(sa.select(_M.id).where(_M.name == name, _M.latest_version > 0)).scalar()
    if found is None:
        names = list(conn.execute(sa.select(_M.name).where(_M.latest_version > 0).order_by(_M.name)
                                  .limit(_SHOWN + 1)).scalars())
        known = ", ".join(names[:_SHOWN]) + (", ..." if len(names) > _SHOWN else "") if names else "none yet"
        raise NotFound(f"no model {name!r} (models: {known}; `runyard model register RUN:PATH --name NAME` "
                       "registers one)")
    return int(found)


def _require_version(conn: Connection, name: str, model_id: int, version: int) -> int:
    if version > limits.INT64_MAX or conn.execute(sa.select(_V.version).where(
            _V.model_id == model_id, _V.version == version)).scalar() is None:
        raise NotFound(f"model {name} has no version {version} ({_versions_said(conn, model_id)})")
    return version


def _versions_said(conn: Connection, model_id: int) -> str:
    low, high = conn.execute(sa.select(sa.func.min(_V.version), sa.func.max(_V.version))
                             .where(_V.model_id == model_id)).one()
    return f"version {low}" if low == high else f"versions {low}-{high}"


def _aliases_said(conn: Connection, model_id: int) -> str:
    pairs = [f"{alias} -> {version}" for alias, version in conn.execute(
        sa.select(_A.alias, _A.version).where(_A.model_id == model_id).order_by(_A.alias).limit(_SHOWN))]
    return "aliases: " + (", ".join(pairs) if pairs else "none") + f", {LATEST}"
