"""The home's local credential, and the proof a server gives that it issued a token.

On a machine shared by several people, a server on loopback is reachable by every local user, so
it always needs a token. The first server a home starts creates an admin token and writes it to
``$RUNYARD_HOME/local-token`` (mode 0600, readable by the home's owner only); the CLI, the SDK's
shipper and the read API send it without being asked, but only to a server that proves it holds
that token.

The proof: before a client sends any token, it asks ``GET /api/proof?prefix=P&nonce=N`` (P is the
token's public prefix, N fresh random) and checks the answer, an HMAC keyed by the token's SHA-256
(which only the server that stored the token has) over the nonce and the ``Host`` the client
addressed. Another server (another user's on another port, a URL from a cloned repository's
file) cannot answer, and relaying the question to the right server does not help: that server
signs its own address, not the relay's. So a token is bound to the server it was created on.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from runyard.errors import ConfigError

if TYPE_CHECKING:
    from runyard.config import Settings

#: The home's local credential: one line, an admin token of the servers this home starts.
LOCAL_TOKEN_NAME = "local-token"  # noqa: S105 - a file name
#: Name of that token in `runyard token list`.
LOCAL_TOKEN_LABEL = "local"  # noqa: S105 - a name
PROOF_PATH = "/api/proof"
DEFAULT_PORTS = ("80", "443")


@dataclass(frozen=True)
class Credential:
    """A token and where it came from; ``local`` when it is the home's own, used without being asked
    (then a server that cannot prove it holds it simply gets no token)."""

    token: str
    source: str
    local: bool = False

    @property
    def shown(self) -> str:
        """The token as it may be printed: its public prefix only."""
        prefix = prefix_of(self.token)
        return f"ry_{prefix}_…" if prefix else "(not a runyard token)"


def for_settings(settings: Settings) -> Credential | None:
    """The token a client of ``settings.server`` offers: the configured one, else the home's local
    credential (raises ``ConfigError`` when that file is readable by others)."""
    if settings.token:
        return Credential(settings.token, settings.source("token"))
    token = read_local(settings.home)
    return Credential(token, str(local_token_path(settings.home)), local=True) if token else None


def local_token_path(home: Path) -> Path:
    return home / LOCAL_TOKEN_NAME


def prefix_of(token: str) -> str | None:
    """The public part of a token as ``runyard token create`` prints it (``ry_<prefix>_<secret>``)."""
    parts = token.split("_", 2)
    if len(parts) == 3 and parts[0] == "ry" and parts[1] and parts[2]:
        return parts[1]
    return None


def read_local(home: Path) -> str | None:
    """The home's local token, or None when there is none yet.

    Refuses (``ConfigError``) a file that other users could read or that another user owns: a
    credential someone else could have read, or planted, is not one to use."""
    path = local_token_path(home)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the local credential: {e.strerror}") from None
    with os.fdopen(fd, "r") as f:
        info = os.fstat(f.fileno())
        problem = _problem(info)
        if problem:
            raise ConfigError(f"{path}: {problem}, so runyard will not use it as this home's credential. "
                              f"If only you could have read it, fix it with `chmod 600 {path}`; otherwise "
                              f"delete it, revoke the token named {LOCAL_TOKEN_LABEL!r} (`runyard token "
                              "revoke local`) and start the server again to make a new one")
        token = f.read(400).strip()
    return token or None


def _problem(info: os.stat_result) -> str | None:
    if not stat.S_ISREG(info.st_mode):
        return "it is not a regular file"
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        return f"it belongs to another user (uid {info.st_uid})"
    if info.st_mode & 0o077:
        return f"other users may read it (mode {stat.S_IMODE(info.st_mode):04o})"
    return None


def write_local(home: Path, token: str) -> Path:
    """Write the local credential, readable by its owner only (created with mode 0600, then renamed
    into place, so no reader ever sees a half-written or wider file)."""
    path = local_token_path(home)
    home.mkdir(parents=True, exist_ok=True)
    temporary = home / f".{LOCAL_TOKEN_NAME}.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        temporary.replace(path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def describe(home: Path) -> tuple[bool, str]:
    """Whether the local credential is usable, and a line saying so (for `runyard doctor`)."""
    path = local_token_path(home)
    try:
        token = read_local(home)
    except ConfigError as e:
        return False, str(e)
    if token is None:
        return True, f"{path}: none yet (the first `runyard server` or `runyard ui` of this home creates it)"
    if prefix_of(token) is None:
        return False, f"{path}: does not hold a runyard token; delete it and start the server again"
    return True, f"{path}: mode 0600, token ry_{prefix_of(token)}_… (used for this home's own servers)"


def host_of(url: str) -> str:
    """The ``Host`` a client sends for ``url``: lower case, the port only when it is not the default."""
    parts = urlsplit(url)
    return normal_host(parts.netloc.rpartition("@")[2])


def normal_host(host: str) -> str:
    """``host`` lower case, without :80 or :443 (clients leave out a default port, proxies differ on
    the scheme they pass on, so both sides drop it)."""
    host = host.lower()
    name, sep, port = host.rpartition(":")
    if sep and name and "]" not in port and port in DEFAULT_PORTS:
        return name
    return host


def proof(token_digest: str, nonce: str, host: str) -> str:
    """What a server holding a token (its SHA-256 hex digest) answers to ``nonce`` asked at ``host``."""
    message = f"runyard-proof\n{nonce}\n{host}".encode()
    return hmac.new(token_digest.encode(), message, hashlib.sha256).hexdigest()


def expected_proof(token: str, nonce: str, url: str) -> str:
    return proof(hashlib.sha256(token.encode()).hexdigest(), nonce, host_of(url))


def new_nonce() -> str:
    return secrets.token_urlsafe(24)
