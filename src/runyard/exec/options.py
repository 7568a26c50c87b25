"""Parsing and checking what a user passes to ``runyard run``: nothing malformed gets queued.

Every value that reaches a process is passed as an argument or an environment variable, never
interpolated into a shell string; these checks make sure each is what it says it is (an
environment name is a name, a pip requirement is not an installer option, a mount target stays
inside the run directory), with one clear message for what is not.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from runyard.errors import ArtifactPathError, InvalidArgument
from runyard.names import validate_relpath

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?$")
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?$", re.IGNORECASE)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def key_value(text: str, option: str) -> tuple[str, str]:
    """``KEY=VALUE`` with KEY a name usable as an environment variable."""
    key, sep, value = text.partition("=")
    if not sep or not _NAME.match(key):
        raise InvalidArgument(f"{option} {text!r}: expected KEY=VALUE, KEY made of letters, digits and _")
    if "\x00" in value:
        raise InvalidArgument(f"{option} {key}: the value contains a NUL byte")
    return key, value


def params(texts: Sequence[str], option: str = "--param") -> dict[str, str]:
    """``KEY=VALUE`` pairs, each KEY once (a repeated key is a mistake: which value was meant?)."""
    out: dict[str, str] = {}
    for text in texts:
        key, value = key_value(text, option)
        if key in out:
            raise InvalidArgument(f"{option} {key} is given twice ({key}={out[key]}, {key}={value}); give each "
                                  f"key once. Keys given: {', '.join(sorted({*out, key}))}")
        out[key] = value
    return out


def param_value(text: str) -> Any:
    """A parameter's value in the run's config: a number or boolean when it reads as one."""
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        number = json.loads(text)
    except ValueError:
        return text
    if isinstance(number, int) and not isinstance(number, bool) and not -(2**63) <= number < 2**63:
        return text  # beyond what JSON columns hold as a number: kept as written
    return number if isinstance(number, int | float) and not isinstance(number, bool) else text


def duration(text: str) -> float:
    """Seconds in ``90``, ``90s``, ``15m``, ``2h`` or ``1h30m``."""
    m = _DURATION.match(text.strip())
    if not text.strip() or not m or not any(m.groups()):
        raise InvalidArgument(f"--timeout {text!r}: expected a duration such as 90s, 15m, 2h or 1h30m")
    hours, minutes, seconds = (float(g) if g else 0.0 for g in m.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if total <= 0:
        raise InvalidArgument(f"--timeout {text!r}: must be more than zero")
    return total


def size(text: str) -> int:
    """Bytes in ``512M``, ``16G``, ``1.5GiB``."""
    m = _SIZE.match(text.strip())
    if not m:
        raise InvalidArgument(f"--memory {text!r}: expected a size such as 512M or 16G")
    unit = (m.group(2) or "").lower()[:1]
    return int(float(m.group(1)) * _UNITS[unit])


def requirement(text: str, where: str, urls: bool = True) -> str:
    """``text`` if ``packaging`` reads it as one requirement (PEP 508: a name, extras, version
    constraints, a marker, ``name @ url`` when ``urls``), else InvalidArgument naming ``where`` and
    the value. Whatever else a line could be (``-f .``, ``--index-url``, ``-r other.txt``, a path)
    pip would read as an option or a file: it never reaches pip."""
    from packaging.requirements import InvalidRequirement, Requirement

    entry = text.strip() if isinstance(text, str) else ""
    shown = repr(text[:200]) if isinstance(text, str) else repr(text)
    try:
        req = Requirement(entry)
    except InvalidRequirement as e:
        first = str(e).splitlines()[0] if str(e) else "not a requirement"
        raise InvalidArgument(f"{where} {shown}: not a package requirement ({first}); give one such as "
                              "'scikit-image', 'torch>=2.1,<3' or 'name @ https://...' (installer options and "
                              "included files are not passed to pip)") from None
    if req.url and not urls:
        raise InvalidArgument(f"{where} {shown}: a requirement with a URL is not accepted here; name a package "
                              "and its versions, such as 'torch>=2.1'")
    return entry


_COMMENT = re.compile(r"(^|\s)#.*$")


def uncommented(line: str) -> str:
    """A requirements-file line without its comment, as pip reads it: ``#`` at the start or after a
    space (``pkg @ https://host/x.whl#sha256=...`` keeps its fragment)."""
    return _COMMENT.sub("", line).strip()


def requirement_lines(text: str, where: str, urls: bool = True) -> list[str]:
    """The requirements of a requirements file (comments and blank lines aside, continued lines
    joined as pip joins them), each checked by ``requirement``."""
    joined = text.replace("\\\n", "")
    out = []
    for number, line in enumerate(joined.splitlines(), 1):
        entry = uncommented(line)
        if entry:
            out.append(requirement(entry, f"{where} line {number}:", urls))
    return out


def pip_spec(text: str) -> str:
    """One ``--pip`` value: a requirement ``packaging`` reads, without a URL (those belong in a
    --requirements file, where they stay on this machine's side)."""
    return requirement(text, "--pip", urls=False)


def pip_name(spec: str) -> str:
    """The package a checked requirement names, normalised as pip compares names (PEP 503)."""
    name = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", spec)
    return re.sub(r"[-_.]+", "-", name.group(0) if name else spec).lower()


def mount(text: str) -> tuple[str, str]:
    """``SOURCE:TARGET``; TARGET is a path inside the run directory. SOURCE is a local path or
    ``RUN:PATH`` (an artifact of another run)."""
    source, sep, target = text.rpartition(":")
    if not sep or not source or not target:
        raise InvalidArgument(f"--mount {text!r}: expected SOURCE:TARGET, e.g. ./data:data or 12:outputs/model:model")
    try:
        validate_relpath(target.rstrip("/") if target != "/" else target)
    except ArtifactPathError as e:
        raise InvalidArgument(f"--mount {text!r}: the target must be a path inside the run directory ({e})") \
            from None
    return source, target.rstrip("/")


def count(value: Any, option: str) -> int | None:
    """A number of GPUs or CPU cores (from a flag or a machine profile), 0 to 4096."""
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 4096):
        raise InvalidArgument(f"{option} {value!r}: expected a whole number from 0 to 4096")
    return value


PRIORITY_LIMIT = 1_000_000


def priority(value: int | None, machine: str | None, machines: Mapping[str, Mapping[str, Any]]) -> int:
    """A run's priority: ``--priority`` if given, else its machine profile's ``priority``, else 0."""
    option = "--priority"
    if value is None and machine is not None and "priority" in machines.get(machine, {}):
        value, option = machines[machine]["priority"], f"[machines.{machine}] priority"
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool) or not -PRIORITY_LIMIT <= value <= PRIORITY_LIMIT:
        raise InvalidArgument(f"{option} {value!r}: expected a whole number from {-PRIORITY_LIMIT} to "
                              f"{PRIORITY_LIMIT} (higher starts first)")
    return value
