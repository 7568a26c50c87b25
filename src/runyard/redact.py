"""Credentials out of what runyard records and shows: URLs, command lines, requirements, messages.

One function per shape of text, all with the same rules, used by every recorder (the SDK's
environment facts, the queued run's command, the supervisor's own log lines) and by every reader
of the launch record (``runyard show``, ``--json``, the HTTP API). A secret becomes ``***`` and
the rest stays readable: ``https://user:***@host/x``, ``--token ***``, ``HF_TOKEN=***``.

What is masked: the password of a URL (or its lone user name, which is often a token, except for
ssh), the value of a secret-named query parameter (``?token=``, ``sig=``...), the value after a
secret-named flag (``--token X``, ``--token=X``, ``--password``, ``--api-key``, ``--secret``...)
and of a secret-named variable assignment (``TOKEN=X``, ``AWS_SECRET_ACCESS_KEY=X``). A name is
secret when it *ends* with one of ``SECRET_SUFFIXES`` (so ``--tokenizer`` and ``--max-tokens``
are not). Standard library only: the SDK imports it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

MASK = "***"
#: How secret names end (compared in lower case, with ``-`` read as ``_``).
SECRET_SUFFIXES = ("token", "password", "passwd", "pwd", "secret", "passphrase", "credential", "credentials",
                   "apikey", "api_key", "access_key", "private_key", "secret_key", "auth")

_SUFFIX = "(?:" + "|".join(s.replace("_", "[-_]") for s in SECRET_SUFFIXES) + ")"
# scheme://userinfo@ — userinfo is everything up to the last @ before the host's path.
_URL_USERINFO = re.compile(r"\b([A-Za-z][A-Za-z0-9+.\-]*://)([^\s/@'\"]+)@")
_QUERY = re.compile(r"([?&;][\w.\-]*?(?:" + _SUFFIX + r"|sig|signature)=)([^&#\s'\"]+)", re.IGNORECASE)
_VALUE = r"(\"[^\"]*\"|'[^']*'|[^\s'\"]+)"
_FLAG = re.compile(r"(--[\w\-]*" + _SUFFIX + r")(=|\s+)" + _VALUE, re.IGNORECASE)
_ASSIGN = re.compile(r"(?<![\w\-])([A-Za-z_][A-Za-z0-9_]*" + _SUFFIX + r")=" + _VALUE, re.IGNORECASE)
_FLAG_ALONE = re.compile(r"--[\w\-]*" + _SUFFIX, re.IGNORECASE)
_SSH = ("ssh://", "git+ssh://", "ssh+git://", "git://", "sftp://")


def _userinfo(match: re.Match[str]) -> str:
    scheme, info = match.group(1), match.group(2)
    if info == MASK or info.endswith(":" + MASK):
        return match.group(0)
    user, colon, _ = info.partition(":")
    if colon:
        return f"{scheme}{user}:{MASK}@"
    if scheme.lower() in _SSH:
        return match.group(0)  # ssh://git@host: a user name, not a secret
    return f"{scheme}{MASK}@"  # https://TOKEN@github.com


def _value(match: re.Match[str]) -> str:
    value = match.group(match.lastindex or 0)
    if value.strip("'\"") == MASK:
        return match.group(0)
    return match.group(0)[: match.start(match.lastindex or 0) - match.start(0)] + MASK


def text(value: str) -> str:
    """Free text (a shell line, a requirements file, a message) with its credentials masked."""
    if not value or ("@" not in value and "=" not in value and "--" not in value):
        return value  # the usual case, at once
    value = _URL_USERINFO.sub(_userinfo, value)
    value = _QUERY.sub(_value, value)
    value = _FLAG.sub(_value, value)
    return _ASSIGN.sub(_value, value)


def url(value: str) -> str:
    """A URL with its password (or token user name) and secret query values masked."""
    return text(value)


def webhook(value: str) -> str:
    """A webhook URL for people to read: its path and query are the secret (Slack, Discord, Teams
    put the key there), so only the scheme and host are kept: ``https://hooks.slack.com/***``."""
    match = re.match(r"([A-Za-z][A-Za-z0-9+.\-]*://)(?:[^/@\s]*@)?([^/?#\s]*)", value or "")
    if match is None:
        return MASK
    rest = value[match.end():]
    return f"{match.group(1)}{match.group(2)}" + (f"/{MASK}" if rest.strip("/") else rest)


def argv(words: Sequence[str]) -> list[str]:
    """A command line (one word per element) with credentials masked: the word after a secret flag
    (``--token X``), and within each word what ``text`` masks (``--token=X``, ``TOKEN=X``, URLs)."""
    out: list[str] = []
    hide_next = False
    for word in words:
        if hide_next:
            out.append(MASK)
            hide_next = False
            continue
        hide_next = _FLAG_ALONE.fullmatch(word) is not None
        out.append(text(word))
    return out


def launch(record: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A copy of a run's launch record as readers see it. The record itself keeps the real values:
    the supervisor runs the real command, and a rerun starts from it."""
    if record is None:
        return None
    out = dict(record)
    for key in ("argv", "template"):
        if isinstance(out.get(key), list):
            out[key] = argv([str(w) for w in out[key]])
    if isinstance(out.get("requirements"), str):
        out["requirements"] = text(out["requirements"])
    if isinstance(out.get("env"), Mapping):
        out["env"] = {k: text(v) if isinstance(v, str) else v for k, v in out["env"].items()}
    if isinstance(out.get("notify"), Mapping):
        out["notify"] = _settings(out["notify"])
    return out


def _settings(table: Mapping[str, Any]) -> dict[str, Any]:
    """A [notify] table: webhook URLs and anything secret-named (an SMTP password) masked."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, Mapping):
            out[key] = _settings(value)
        elif key == "url" and isinstance(value, str):
            out[key] = webhook(value)
        elif any(str(key).lower().replace("-", "_").endswith(s) for s in SECRET_SUFFIXES):
            out[key] = MASK
        else:
            out[key] = value
    return out


def run_data(data: dict[str, Any]) -> dict[str, Any]:
    """A run in its JSON form (``wire.run_out``, ``show --json``), as readers see it: the launch
    record masked, and the recorded command and git remote again (runs recorded before runyard
    masked them at recording time). Changes ``data`` (top level only) and returns it."""
    if isinstance(data.get("command"), list):
        data["command"] = argv([str(w) for w in data["command"]])
    environment = data.get("environment")
    if isinstance(environment, Mapping) and ("argv" in environment or "git_remote" in environment):
        environment = dict(environment)
        if isinstance(environment.get("argv"), list):
            environment["argv"] = argv([str(w) for w in environment["argv"]])
        if isinstance(environment.get("git_remote"), str):
            environment["git_remote"] = url(environment["git_remote"])
        data["environment"] = environment
    if isinstance(data.get("launch"), Mapping):
        data["launch"] = launch(data["launch"])
    return data
