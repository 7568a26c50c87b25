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
    │   └── Unstorable       well formed, but the database refuses it, however often it is sent
    └── ServerError          the runyard server cannot be reached, or failed
        └── AccessDenied     the server refused the token (401) or its role (403)

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


class ServerError(RunyardError):
    """The runyard server cannot be reached, or answered with an error of its own."""


class AccessDenied(ServerError):
    """The server refused the request's token (missing, unknown, revoked) or its role."""
