"""The model commands: register, alias, unalias, ls. Through ``runyard.api.Api``, so they work the
same on the local store and, with RUNYARD_SERVER set, through the server's /api/v1/models routes."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from runyard.cli.printable import printable
from runyard.errors import InvalidArgument
from runyard.names import validate_model_alias, validate_model_name

if TYPE_CHECKING:
    from runyard.api import Api
    from runyard.store.api import ModelVersion


def _open() -> Api:
    from runyard.api import Api

    return Api()


def _local_user() -> str:
    import getpass
    import os

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry for this uid (a container)
        return f"uid {os.getuid()}"


def _print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2) + "\n")


def _size(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    rows = [[printable(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def register(source: str, name: str, aliases: Sequence[str], description: str, as_json: bool) -> int:
    from runyard import wire

    ref, sep, path = source.partition(":")
    if not sep or not ref:
        raise InvalidArgument(f"{source!r}: expected RUN:PATH, e.g. 12:outputs/model or 12:model.pt "
                              "(RUN: alone registers all of the run's artifacts)")
    validate_model_name(name)
    for alias in aliases:
        validate_model_alias(alias)
    api = _open()
    try:
        run = api.store.get_run(ref)
        if not api.remote:
            api.sync(runs=[run.id])  # what the run stored a moment ago may still be in its spool
        version = api.store.register_model(name, run.number, path, description, _local_user(), list(aliases))
    finally:
        api.close()
    if as_json:
        _print_json(wire.model_version_out(version))
        return 0
    print(printable(f"registered model:{version.name}@{version.version}: run {version.run_number} "
                    f"{version.path or '(all artifacts)'}, {version.file_count} file(s), {_size(version.size)}, "
                    f"digest {version.digest[:12]}"))
    if version.aliases:
        print(printable(f"aliases: {', '.join(version.aliases)}"))
    return 0


def alias(name: str, alias_name: str, version: int, as_json: bool) -> int:
    from runyard import wire

    validate_model_alias(alias_name)
    api = _open()
    try:
        target = api.store.set_model_alias(name, alias_name, version)
    finally:
        api.close()
    if as_json:
        _print_json(wire.model_version_out(target))
    else:
        print(printable(f"model:{name}@{alias_name} -> version {target.version} (run {target.run_number} "
                        f"{target.path or '(all artifacts)'})"))
    return 0


def unalias(name: str, alias_name: str, as_json: bool) -> int:
    api = _open()
    try:
        version = api.store.remove_model_alias(name, alias_name)
    finally:
        api.close()
    if as_json:
        _print_json({"name": name, "alias": alias_name, "version": version})
    else:
        print(printable(f"removed alias {alias_name} of model {name} (it named version {version})"))
    return 0


def ls(name: str | None, as_json: bool) -> int:
    from runyard import wire

    api = _open()
    try:
        if name is None:
            models = api.store.list_models()
        else:
            versions = api.store.model_versions(name)
    finally:
        api.close()
    if name is None:
        if as_json:
            _print_json([wire.model_out(m) for m in models])
        elif not models:
            print("no models yet: `runyard model register RUN:PATH --name NAME` registers one")
        else:
            print(_table(["MODEL", "LATEST", "RUN", "PATH", "ALIASES", "REGISTERED"],
                         [[m.name, str(m.latest.version), str(m.latest.run_number), m.latest.path or ".",
                           ", ".join(f"{a}={v}" for a, v in sorted(m.aliases.items())) or "-",
                           _when(m.latest.created_at)] for m in models]))
        return 0
    if as_json:
        _print_json([wire.model_version_out(v) for v in versions])
    else:
        print(_table(["VERSION", "RUN", "PATH", "FILES", "SIZE", "ALIASES", "REGISTERED", "BY", "DIGEST"],
                     [_version_row(v, i == 0) for i, v in enumerate(versions)]))
    return 0


def _version_row(v: ModelVersion, newest: bool) -> list[str]:
    aliases = [*v.aliases, *(["latest"] if newest else [])]
    return [str(v.version), str(v.run_number), v.path or ".", str(v.file_count), _size(v.size),
            ", ".join(aliases) or "-", _when(v.created_at), v.registered_by, v.digest[:12]]
