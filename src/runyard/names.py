"""Validation of the names people give things: labels, run names, metric keys, artifact paths.

Standard library only, so that the SDK can check a name in the caller, at once, and the store can
check it again at its boundary with the same rule.
"""

from __future__ import annotations

import re

from runyard.errors import ArtifactPathError, InvalidArgument
from runyard.types import END_STATUSES, RunStatus

_LABEL = re.compile(r"^[\w.:=@][\w.:=@/+\-]{0,99}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DRIVE = re.compile(r"^[A-Za-z]:")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")
MAX_PATH = 1024


def is_number(text: str) -> bool:
    """Whether ``int(text)`` reads ``text`` as a plain non-negative number. Not ``str.isdigit``:
    that is true for "²", which ``int`` refuses (found by schemathesis in run references)."""
    return text.isascii() and text.isdigit()


def validate_label(label: str) -> str:
    if not isinstance(label, str) or not _LABEL.match(label):
        raise InvalidArgument(
            f"invalid label {label!r}: use 1-100 letters, digits or . _ : = @ / + -, "
            "not starting with + or -"
        )
    return label


def validate_run_name(name: str) -> str:
    if (
        not isinstance(name, str)
        or not 0 < len(name) <= 200
        or _CONTROL.search(name)
        or "/" in name
        or "\\" in name
        or name.isdigit()
        or name.strip() != name
    ):
        raise InvalidArgument(
            f"invalid run name {name!r}: use 1-200 characters, no slashes or control characters, "
            "no surrounding spaces, and not only digits (numbers refer to runs)"
        )
    return name


def validate_project_name(name: str) -> str:
    if not isinstance(name, str) or not 0 < len(name) <= 100 or _CONTROL.search(name) or "/" in name \
            or "\\" in name or name.strip() != name:
        raise InvalidArgument(f"invalid project name {name!r}: use 1-100 characters without slashes")
    return name


def validate_metric_key(key: str) -> str:
    if not isinstance(key, str) or not 0 < len(key) <= 256 or _CONTROL.search(key) or '"' in key:
        shown = f"{key[:80]!r}..." if isinstance(key, str) and len(key) > 80 else repr(key)
        raise InvalidArgument(
            f"invalid metric name {shown}: use 1-256 characters without control characters or quotes"
        )
    return key


def validate_key(key: object, kind: str) -> str:
    """A key of a run's config or summary: the rule for metric names, as ``summary.<key>`` and
    ``config.<key>`` sort and show like them."""
    if not isinstance(key, str) or not 0 < len(key) <= 256 or _CONTROL.search(key) or '"' in key:
        raise InvalidArgument(f"invalid {kind} key {str(key)[:80]!r}{'...' if len(str(key)) > 80 else ''}: use "
                              "1-256 characters without control characters or quotes")
    return key


def validate_relpath(path: str) -> str:
    """Return ``path`` if it is a safe POSIX path relative to a run, else raise ArtifactPathError."""
    if not isinstance(path, str) or path == "":
        raise ArtifactPathError("artifact path is empty")
    shown = repr(path[:200])
    if len(path) > MAX_PATH:
        raise ArtifactPathError(f"artifact path {shown}... is longer than {MAX_PATH} characters")
    if "\x00" in path:
        raise ArtifactPathError(f"artifact path {shown} contains a NUL byte")
    if _CONTROL.search(path):
        raise ArtifactPathError(f"artifact path {shown} contains a control character")
    if "\\" in path:
        raise ArtifactPathError(f"artifact path {shown} contains a backslash; use / between folders")
    if path.startswith("/") or _DRIVE.match(path):
        raise ArtifactPathError(f"artifact path {shown} is absolute; give a path relative to the run")
    if _SCHEME.match(path):
        raise ArtifactPathError(f"artifact path {shown} looks like a URL; give a path relative to the run")
    for segment in path.split("/"):
        if segment in ("..", "."):
            raise ArtifactPathError(f"artifact path {shown} contains a {segment!r} segment")
        if segment == "":
            raise ArtifactPathError(f"artifact path {shown} contains an empty segment (// or a trailing /)")
    return path


def validate_end_status(status: object, field: str = "status") -> RunStatus:
    """How a run says it ended: one of END_STATUSES (checked by the SDK's ``finish`` and by ingest)."""
    if not isinstance(status, str) or status not in {s.value for s in END_STATUSES}:
        shown = repr(status)[:80]
        choices = ", ".join(sorted(s.value for s in END_STATUSES))
        raise InvalidArgument(f"{field}: {shown} is not how a run ends; use one of {choices}")
    return RunStatus(status)


_MODEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
#: The alias every model has: its newest version. Nobody may set it.
LATEST = "latest"


def validate_model_name(name: str) -> str:
    """A registered model's name: it appears in references (``model:NAME@ALIAS``) and in URLs."""
    if not isinstance(name, str) or not _MODEL.match(name):
        raise InvalidArgument(f"invalid model name {str(name)[:80]!r}: use 1-100 letters, digits or . _ -, "
                              "starting with a letter or digit (e.g. digits, resnet-50)")
    return name


def validate_model_alias(alias: str) -> str:
    """An alias a user sets on a model version: not ``latest`` (reserved), not a number (that is a version)."""
    if not isinstance(alias, str) or not _MODEL.match(alias):
        raise InvalidArgument(f"invalid alias {str(alias)[:80]!r}: use 1-100 letters, digits or . _ -, "
                              "starting with a letter or digit (e.g. production, staging)")
    if is_number(alias):
        raise InvalidArgument(f"invalid alias {alias!r}: an alias may not be only digits (model:NAME@{alias} "
                              "names version " + alias + ")")
    if alias.lower() == LATEST:
        raise InvalidArgument(f"the alias {alias!r} is reserved: it always names a model's newest version")
    return alias
