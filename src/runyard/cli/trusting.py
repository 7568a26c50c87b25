"""``runyard trust``: let this directory's runyard.toml say where runs, code and the token go."""

from __future__ import annotations

from pathlib import Path

import orjson

from runyard.config import find_project_file, home_directory
from runyard.errors import InvalidArgument
from runyard.trust import GUARDED, is_trusted, set_trusted


def run(revoke: bool, as_json: bool) -> int:
    import tomllib

    home, _ = home_directory()
    project_file = find_project_file(Path.cwd())
    if project_file is None:
        raise InvalidArgument("no runyard.toml in this directory or above it: nothing to trust")
    try:
        data = tomllib.loads(project_file.read_text())
    except (OSError, ValueError) as e:
        raise InvalidArgument(f"{project_file}: cannot read it ({e})") from None
    guarded = {key: data[key] for key in GUARDED if key in data}
    set_trusted(home, project_file, not revoke)
    if as_json:
        print(orjson.dumps({"file": str(project_file), "trusted": is_trusted(home, project_file),
                            "settings": guarded}, option=orjson.OPT_INDENT_2).decode())
        return 0
    if revoke:
        print(f"{project_file} is no longer trusted: its {', '.join(GUARDED)} are refused until `runyard trust`")
        return 0
    said = ", ".join(f"{key} = {value!r}" for key, value in guarded.items()) or f"none of {', '.join(GUARDED)}"
    print(f"trusted {project_file} as it is now (it sets {said}); a change to it needs `runyard trust` again")
    return 0
