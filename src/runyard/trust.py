"""Which project files may say where runs, code and credentials go.

A project's ``runyard.toml`` comes with the repository: whoever wrote it, not the person running
``runyard run`` in a fresh clone, chose its values. Most settings in it are harmless (a project
name, alert rules, machine profiles), but ``server``, ``db`` and ``artifacts`` decide where every
run's records, its code snapshot and (through ``server``) the user's token are sent. Such a file
takes effect only once its user has trusted it (``runyard trust``, as direnv's ``allow``), and only
as long as it is unchanged: trust names the file's content, so an edit pulled in later lapses it.
A token is never read from a project file at all.

The trusted files are listed in the home, as ``{path: sha256 of the content}``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

#: Settings that decide where data and credentials go.
GUARDED = ("server", "db", "artifacts", "s3_endpoint")
#: Settings a project file may never hold.
NEVER = ("token",)
TRUST_FILE = "trusted.json"


def digest(project_file: Path) -> str:
    return hashlib.sha256(project_file.read_bytes()).hexdigest()


def _read(home: Path) -> dict[str, str]:
    try:
        data = json.loads((home / TRUST_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def is_trusted(home: Path, project_file: Path) -> bool:
    """Whether the user trusted this file, as it is now."""
    try:
        return _read(home).get(str(project_file.resolve())) == digest(project_file)
    except OSError:
        return False


def set_trusted(home: Path, project_file: Path, trusted: bool) -> None:
    """Trust the file as it is now, or withdraw trust. The list is written whole, then renamed."""
    entries = _read(home)
    key = str(project_file.resolve())
    if trusted:
        entries[key] = digest(project_file)
    else:
        entries.pop(key, None)
    home.mkdir(parents=True, exist_ok=True)
    temporary = home / f".{TRUST_FILE}.{os.getpid()}"
    temporary.write_text(json.dumps(entries, indent=1, sort_keys=True) + "\n")
    temporary.replace(home / TRUST_FILE)
