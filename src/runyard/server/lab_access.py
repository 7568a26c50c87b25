"""Who may reach a run's JupyterLab through the server's lab origin (``server/lab.py``).

``POST /api/v1/runs/{ref}/lab`` (a writer) gets a *ticket*: one-time, lapsing after TICKET_TTL,
bound to the run and the token that asked, as a login code of ``runyard ui`` is (``Policy``). The
browser redeems it at the lab origin for a *session*: a cookie scoped to that run's path, which
acts for the same token on the same run only, and only while the token is active (checked by the
caller on every request: ``LabAccess`` knows nothing of tokens or runs).

A JupyterLab on a Ray node is *announced*: the node's supervisor says where it answers, and its
token, every ``announce.EVERY`` seconds (``POST /api/v1/runs/{ref}/lab/address``); kept here, in memory only,
until ``announce.KEPT_FOR`` passes without news.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

#: Seconds a ticket waits for its browser; a lab session lasts as long as the token and the run, at
#: most SESSION_TTL.
TICKET_TTL = 120.0
SESSION_TTL = 7 * 86_400.0
#: Tickets, and sessions, a token holds at most: opening one more ends its oldest (a script that
#: opens links in a loop fills no memory; a person has a few browsers).
MOST_PER_TOKEN = 64


@dataclass(frozen=True)
class Grant:
    """What a ticket or a session allows: the run ``run_id``, as the token ``token_id`` (None: a
    server started with ``--insecure-local`` while no token exists)."""

    run_id: str
    token_id: int | None
    expires: float


@dataclass(frozen=True)
class Announced:
    """Where a run's JupyterLab on another machine answers, with its token, and until when this is
    believed (monotonic)."""

    host: str
    port: int
    token: str
    expires: float


@dataclass
class LabAccess:
    """Tickets and lab sessions, in memory (a restarted server forgets them: open the lab again)."""

    clock: Callable[[], float] = time.monotonic
    _tickets: dict[str, Grant] = field(default_factory=dict)
    _sessions: dict[str, Grant] = field(default_factory=dict)
    _announced: dict[str, Announced] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def ticket(self, run_id: str, token_id: int | None) -> str:
        """A ticket that opens run ``run_id``'s JupyterLab once, as ``token_id``, within TICKET_TTL."""
        secret = secrets.token_urlsafe(24)
        now = self.clock()
        with self._lock:
            _drop_lapsed(self._tickets, now)
            _keep_at_most(self._tickets, token_id, MOST_PER_TOKEN - 1)
            self._tickets[secret] = Grant(run_id, token_id, now + TICKET_TTL)
        return secret

    def redeem(self, ticket: str, run_id: str) -> tuple[str, Grant] | None:
        """A new session for a ticket of run ``run_id``, which is used up (whichever run it was
        presented at); None for an unknown, expired or other run's ticket."""
        now = self.clock()
        with self._lock:
            grant = self._tickets.pop(ticket, None)
            if grant is None or grant.expires <= now or grant.run_id != run_id:
                return None
            session = secrets.token_urlsafe(32)
            _drop_lapsed(self._sessions, now)
            _keep_at_most(self._sessions, grant.token_id, MOST_PER_TOKEN - 1)
            granted = Grant(run_id, grant.token_id, now + SESSION_TTL)
            self._sessions[session] = granted
        return session, granted

    def session(self, secret: str, run_id: str) -> Grant | None:
        """What session ``secret`` allows at run ``run_id``'s path: None unless it was made for that run."""
        with self._lock:
            grant = self._sessions.get(secret)
        if grant is None or grant.expires <= self.clock() or grant.run_id != run_id:
            return None
        return grant

    def known(self, secret: str, *, ticket: bool = False) -> bool:
        """Whether ``secret`` is a live session (a ticket, with ``ticket``) of any run: checked before
        a caller's name for a model is looked up, so that strangers learn nothing of what is served."""
        with self._lock:
            grant = (self._tickets if ticket else self._sessions).get(secret)
        return grant is not None and grant.expires > self.clock()

    def end(self, secret: str) -> None:
        """Forget a session (its run ended, or its token was revoked)."""
        with self._lock:
            self._sessions.pop(secret, None)

    def announce(self, run_id: str, host: str, port: int, token: str, kept_for: float) -> bool:
        """Run ``run_id``'s JupyterLab answers at ``host:port`` with ``token``, for ``kept_for`` seconds.
        False (nothing changed) while another address or token said for it has not lapsed: whoever
        else holds the run's token cannot take a teammate's JupyterLab over once it is up."""
        now = self.clock()
        with self._lock:
            _drop_lapsed(self._announced, now)
            said = self._announced.pop(run_id, None)
            if said is not None and (said.host, said.port, said.token) != (host, port, token):
                self._announced[run_id] = said
                return False
            self._announced[run_id] = Announced(host, port, token, now + kept_for)  # renewed: moved last
            return True

    def announced(self, run_id: str) -> Announced | None:
        """Where run ``run_id``'s JupyterLab was last said to answer, unless that is too old."""
        with self._lock:
            found = self._announced.get(run_id)
        return found if found is not None and found.expires > self.clock() else None


def _drop_lapsed(grants: dict[str, Grant] | dict[str, Announced], now: float) -> None:
    """Forget what lapsed. Each kind lives as long, so it lapses in the order it was made or renewed
    (a dict's): only the front is looked at, not the whole (this runs on the event loop)."""
    while grants:
        first = next(iter(grants))
        if grants[first].expires > now:
            return
        del grants[first]


def _keep_at_most(grants: dict[str, Grant], token_id: int | None, most: int) -> None:
    """Leave ``token_id`` at most ``most`` grants, its oldest going first."""
    held = [secret for secret, grant in grants.items() if grant.token_id == token_id]
    for secret in held[:max(0, len(held) - most)]:
        del grants[secret]
