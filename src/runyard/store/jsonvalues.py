"""JSON for config and summary values that keeps NaN and the infinities.

JSON has no NaN or infinity, and orjson turns them into null, which would make a NaN loss look like
a missing one. They are written as ``{"$float": "NaN" | "Infinity" | "-Infinity"}`` and read back as
floats. In a sort such a value comes after every number on both engines.

That tagged form is the store's own. What runyard shows outside (every ``--json`` output and the
HTTP API) is ``public``: the strings "NaN", "Infinity" and "-Infinity", which any JSON reader takes
and which read as what they are; ``numbers_from_public`` turns them back where a number is expected.
"""

from __future__ import annotations

import math
import re
from typing import Any

import orjson

_TAG = "$float"
_NAMES = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _tag(value: float) -> dict[str, str]:
    if math.isnan(value):
        return {_TAG: "NaN"}
    return {_TAG: "Infinity" if value > 0 else "-Infinity"}


def _encode(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return _tag(value)
    if isinstance(value, dict):
        return {str(k): _encode(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_encode(v) for v in value]
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if len(value) == 1 and _TAG in value and value[_TAG] in _NAMES:
            return _NAMES[value[_TAG]]
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


#: A ``\u0000`` escape in JSON text: after an even number of backslashes (an odd number would
#: make it the text "\\u0000", a backslash and five letters).
_NUL_ESCAPE = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")


def dumps(value: Any) -> str:
    text = orjson.dumps(_encode(value), option=orjson.OPT_SERIALIZE_NUMPY).decode()
    if "\\u0000" in text:
        # PostgreSQL's JSON cannot hold a NUL and would refuse the whole record; SQLite would keep it.
        # Both keep U+FFFD where it was, as log lines and notes do.
        text = _NUL_ESCAPE.sub(lambda m: m.group(1) + "\\ufffd", text)
    return text


def loads(text: str | bytes) -> Any:
    value = orjson.loads(text)
    # Only a text that holds the tag can hold a tagged value: skip the walk (a 10,000-run table
    # reads 10,000 configs).
    tagged = _TAG.encode() in text if isinstance(text, bytes) else _TAG in text
    if not tagged:
        return value
    return _decode(value)


def _plain_already(value: Any) -> bool:
    """Whether ``value`` is already its stored form: JSON with string keys and no NaN or infinity.

    orjson (C) writes NaN and the infinities as null and refuses keys that are not strings, so an
    output without "null" proves it; a None or a string holding "null" only costs the slow path.
    """
    try:
        return b"null" not in orjson.dumps(value)
    except TypeError:
        return False


def sort_literal(value: Any) -> Any:
    """The stored form of a single value, for comparisons in SQL (and for JSON answers)."""
    if isinstance(value, dict | list) and _plain_already(value):
        return value
    return _encode(value)


def from_plain(value: Any) -> Any:
    """The inverse of ``sort_literal``: tags back to floats, in values already parsed from JSON."""
    return _decode(value)


_PUBLIC_NAMES = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _public_float(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def public(value: Any) -> Any:
    """The documented outside form of a value: NaN and the infinities as the strings "NaN",
    "Infinity", "-Infinity" (stored tags too), everything else as it is. Copies only what it changes."""
    if isinstance(value, float):
        return value if math.isfinite(value) else _public_float(value)
    if isinstance(value, dict):
        if len(value) == 1 and _TAG in value and value[_TAG] in _NAMES:
            return value[_TAG]
        if _plain_already(value):
            return value
        return {str(k): public(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        if _plain_already(value):
            return value if isinstance(value, list) else list(value)
        return [public(v) for v in value]
    return value


def numbers_from_public(value: Any) -> Any:
    """The inverse of ``public`` for values that are numbers (summaries, metric values): the three
    strings back to floats; tagged values (from an older server) too."""
    if isinstance(value, str):
        return _PUBLIC_NAMES.get(value, value)
    if isinstance(value, dict):
        if len(value) == 1 and _TAG in value and value[_TAG] in _NAMES:
            return _NAMES[value[_TAG]]
        return {k: numbers_from_public(v) for k, v in value.items()}
    if isinstance(value, list):
        return [numbers_from_public(v) for v in value]
    return value
