"""The server fixtures of tests/unit/server, for the security tests (a real app on each engine)."""

from tests.unit.server.conftest import api, live_server  # noqa: F401 - fixtures, used by name

