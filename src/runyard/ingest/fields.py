"""What each field of a spool record may hold, checked before anything is applied.

The SDK and the supervisor write these records; a writer token may send any bytes instead. Every
check raises InvalidArgument naming the field (``start.host``, ``end.exit_code``, a log's ``time``),
so the server answers 400 and the local tailer quarantines the record, rather than a 500 from deep
in the store. Keys of config and summary follow the SDK's rule for metric names (runyard.names).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from runyard.errors import InvalidArgument
from runyard.names import validate_key

#: Longest free text one field takes (a note, a log line, a status message).
MAX_TEXT = 1 << 20
#: Longest short text (a host name, an environment or command entry's key).
MAX_SHORT = 1024
#: A 64-bit signed integer's bounds: what both engines store in an integer column.
INT64 = (-(1 << 63), (1 << 63) - 1)


def _shown(value: Any) -> str:
    return f"{type(value).__name__} {repr(value)[:60]}"


def text(value: Any, field: str, limit: int = MAX_TEXT) -> str:
    if type(value) is not str:
        raise InvalidArgument(f"{field} must be text, not {_shown(value)}")
    if len(value) > limit:
        raise InvalidArgument(f"{field} is {len(value):,} characters long; at most {limit:,}")
    return value


def optional_text(value: Any, field: str, limit: int = MAX_TEXT) -> str | None:
    return None if value is None else text(value, field, limit)


#: An exit code's column is 32 bits wide on PostgreSQL (exit codes and negative signals fit).
INT32 = (-(1 << 31), (1 << 31) - 1)


def integer(value: Any, field: str, bounds: tuple[int, int] = INT64) -> int:
    if type(value) is not int or not bounds[0] <= value <= bounds[1]:
        bits = 32 if bounds == INT32 else 64
        raise InvalidArgument(f"{field} must be an integer within {bits} bits, not {_shown(value)}")
    return value


#: Largest time, in seconds since 1970, a record may carry (the year 5138).
MAX_TIME = 1e11


def moment(value: Any, field: str) -> float:
    """A time: seconds since the epoch, finite."""
    if type(value) not in (int, float) or not math.isfinite(value) or abs(value) > MAX_TIME:
        raise InvalidArgument(f"{field} must be a time in seconds since 1970, not {_shown(value)}")
    return float(value)


#: Deepest nesting of lists and maps in user data (config, summary, environment): the JSON the
#: store writes refuses much deeper values, and no configuration needs them.
MAX_DEPTH = 64


def data(value: Any, field: str, depth: int = 0) -> Any:
    """User data as the store keeps it, in JSON: text, numbers, booleans, None, and lists and maps
    of them. Not bytes or a msgpack timestamp, which msgpack decodes but JSON cannot hold."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if depth >= MAX_DEPTH or type(value) not in (list, tuple, dict):
        what = f"nested deeper than {MAX_DEPTH} levels" if depth >= MAX_DEPTH else _shown(value)
        raise InvalidArgument(f"{field} must be text, a number, a boolean, None, or a list or map of them, "
                              f"not {what}")
    if type(value) is dict:
        for key, item in value.items():
            data(item, f"{field}[{text(key, f'{field} key', MAX_SHORT)[:60]!r}]", depth + 1)
    else:
        for i, item in enumerate(value):
            data(item, f"{field}[{i}]", depth + 1)
    return value


def mapping(value: Any, field: str, keys: bool = False) -> dict[str, Any]:
    """A map with text keys (``keys``: each a valid name, as for metrics) of user data (``data``)."""
    if not isinstance(value, Mapping):
        raise InvalidArgument(f"{field} must be a map, not {_shown(value)}")
    for key, item in value.items():
        if keys:
            validate_key(key, field)
        else:
            text(key, f"{field} key", MAX_SHORT)
        data(item, f"{field}[{key[:60]!r}]", 1)
    return dict(value)


#: Keys of a run's environment that the store keeps in columns of their own, as text.
GIT_KEYS = ("git_commit", "git_branch", "git_diff_ref")


def environment(value: Any, field: str) -> dict[str, Any]:
    """A run's environment: user data, but for the git keys, which must be text."""
    env = mapping(value, field)
    for key in GIT_KEYS:
        optional_text(env.get(key), f"{field}.{key}", MAX_SHORT)
    return env


def text_list(value: Any, field: str, limit: int = MAX_TEXT) -> list[str]:
    if type(value) not in (list, tuple):
        raise InvalidArgument(f"{field} must be a list of text, not {_shown(value)}")
    return [text(item, f"{field}[{i}]", limit) for i, item in enumerate(value)]
