"""runyard's errors. Every one a user can meet derives from ``RunyardError``::

    RunyardError
    ├── ConfigError          a setting or configuration file is invalid
    ├── StoreError           the metadata store cannot be used
    │   ├── SchemaError      the database schema is older or newer than this runyard
    │   └── StoreUnavailable the database cannot be reached
    ├── SpoolError           a spool segment is unreadable (not a torn tail: that is expected)
    ├── ArtifactError        an artifact cannot be stored or read
    │   └── ArtifactPathError  a path would leave the artifact store, or is malformed
    ├── NotFound             a run, project or artifact reference matches nothing
    │   (also a LookupError)
    ├── Ambiguous            a reference matches more than one thing
    ├── Conflict             the change contradicts the current state
    ├── InvalidArgument      a value passed by a caller is malformed (also a ValueError)
    │   ├── Unstorable       well formed, but the database refuses it, however often it is sent
    │   └── TooLarge         more than one request may carry (413): send it in parts
    └── ServerError          the runyard server cannot be reached, or failed
        ├── AccessDenied     the server refused the token (401) or its role (403)
        └── Busy             the server is at capacity: the same request may succeed later (503)

Messages name the value at fault, what was expected, and, where there is one, the command that fixes it.
"""

from __future__ import annotations


class RunyardError(Exception):
    """Base of every error runyard raises on purpose."""


class ConfigError(RunyardError):
    """A setting, environment variable or configuration file is invalid."""


class StoreError(RunyardError):
    """The metadata store cannot be used."""


class SchemaError(StoreError):
    """The database schema does not match this version of runyard."""


class StoreUnavailable(StoreError):
    """The database server cannot be reached."""


class SpoolError(RunyardError):
    """A spool segment cannot be read (wrong format or version)."""


class ArtifactError(RunyardError):
    """An artifact cannot be stored or read."""


class ArtifactPathError(ArtifactError, ValueError):
    """A path inside a run is malformed or would leave the artifact store."""


class NotFound(RunyardError, LookupError):
    """A run, project, series or artifact reference matches nothing."""


class Ambiguous(RunyardError, LookupError):
    """A reference matches more than one thing."""


class Conflict(RunyardError):
    """The requested change contradicts the current state."""


class InvalidArgument(RunyardError, ValueError):
    """A caller passed a malformed value."""


class Unstorable(InvalidArgument):
    """The database refuses this value, whenever it is sent (a NUL character in PostgreSQL text, a
    number beyond its column's range): the server answers 422, and retrying cannot help."""


class TooLarge(InvalidArgument):
    """A body, or what it decodes to, is bigger than the server takes in one request (413): smaller
    parts may be accepted, the same request never."""


class ServerError(RunyardError):
    """The runyard server cannot be reached, or answered with an error of its own."""


class AccessDenied(ServerError):
    """The server refused the request's token (missing, unknown, revoked) or its role."""


class Busy(ServerError):
    """The server is at capacity (too many heavy requests or connections at once) or its database is
    busy: it answers 503 with ``Retry-After`` (``retry_after``, seconds), and the same request may
    succeed then."""

    def __init__(self, message: str, retry_after: float = 5.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after
