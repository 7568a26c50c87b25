"""API tokens: created once, kept only as SHA-256 digests, revocable.

A token is 32 random bytes, shown once as ``ry_<prefix>_<secret>``; the prefix (stored in the
clear) lets a person tell their tokens apart in ``runyard token list`` without the secret.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import sqlalchemy as sa

from runyard.errors import Ambiguous, InvalidArgument, NotFound
from runyard.store import projects_sql
from runyard.store.schema import api_tokens, projects

if TYPE_CHECKING:
    from runyard.store.sql import SqlStore

Role = Literal["reader", "writer", "admin"]
ROLES: tuple[Role, ...] = ("reader", "writer", "admin")
#: What each role may do, by rank: a role may do everything a lower one may.
RANK = {"reader": 1, "writer": 2, "admin": 3}


@dataclass(frozen=True)
class TokenInfo:
    id: int
    name: str
    role: Role
    project: str | None
    prefix: str
    created_at: float
    last_used_at: float | None
    revoked_at: float | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _row(r: sa.Row) -> TokenInfo:  # type: ignore[type-arg]
    return TokenInfo(r.id, r.name, r.role, r.project_name, r.prefix, r.created_at, r.last_used_at, r.revoked_at)


def _select() -> sa.Select:  # type: ignore[type-arg]
    return sa.select(api_tokens, projects.c.name.label("project_name")).select_from(
        api_tokens.outerjoin(projects, projects.c.id == api_tokens.c.project_id))


class Tokens:
    """Token operations on a SqlStore's database."""

    def __init__(self, store: SqlStore) -> None:
        self.store = store

    def create(self, role: str, name: str | None = None, project: str | None = None) -> tuple[TokenInfo, str]:
        """A new token and its secret (the only time the secret exists outside the caller)."""
        if role not in ROLES:
            raise InvalidArgument(f"role {role!r}: expected one of {', '.join(ROLES)}")
        prefix = secrets.token_hex(4)
        secret = f"ry_{prefix}_{secrets.token_urlsafe(32)}"
        now = self.store.clock()
        with self.store._write() as conn:
            project_id = projects_sql.project_id(conn, project, self.store.clock) if project else None
            token_id = conn.execute(sa.insert(api_tokens).values(
                name=name or f"token-{prefix}", role=role, project_id=project_id, token_sha256=digest(secret),
                prefix=prefix, created_at=now).returning(api_tokens.c.id)).scalar_one()
        return self.get(int(token_id)), secret

    def adopt(self, secret: str, role: str, name: str) -> TokenInfo:
        """Register a token whose secret was made elsewhere (a home's local credential, for a
        database that does not know it yet)."""
        if role not in ROLES:
            raise InvalidArgument(f"role {role!r}: expected one of {', '.join(ROLES)}")
        prefix = secret.split("_")[1] if secret.startswith("ry_") and secret.count("_") >= 2 else ""
        if not prefix:
            raise InvalidArgument("expected a token as printed by `runyard token create`")
        with self.store._write() as conn:
            token_id = conn.execute(sa.insert(api_tokens).values(
                name=name, role=role, project_id=None, token_sha256=digest(secret), prefix=prefix,
                created_at=self.store.clock()).returning(api_tokens.c.id)).scalar_one()
        return self.get(int(token_id))

    def digest_of(self, prefix: str) -> str | None:
        """The stored digest of the active token with this prefix (what the server proves it holds)."""
        with self.store._read() as conn:
            rows = conn.execute(sa.select(api_tokens.c.token_sha256).where(
                api_tokens.c.prefix == prefix, api_tokens.c.revoked_at.is_(None)).limit(2)).all()
        return str(rows[0][0]) if len(rows) == 1 else None

    def get(self, token_id: int) -> TokenInfo:
        with self.store._read() as conn:
            row = conn.execute(_select().where(api_tokens.c.id == token_id)).one_or_none()
        if row is None:
            raise NotFound(f"no token with id {token_id}")
        return _row(row)

    def list(self, include_revoked: bool = False) -> list[TokenInfo]:
        stmt = _select().order_by(api_tokens.c.id)
        if not include_revoked:
            stmt = stmt.where(api_tokens.c.revoked_at.is_(None))
        with self.store._read() as conn:
            return [_row(r) for r in conn.execute(stmt)]

    def any_active(self) -> bool:
        with self.store._read() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(api_tokens)
                                .where(api_tokens.c.revoked_at.is_(None))).scalar_one() > 0

    def find(self, ref: str) -> TokenInfo:
        """A token by id, name or prefix."""
        matches = [t for t in self.list(include_revoked=True)
                   if ref in (str(t.id), t.name, t.prefix) or ref.startswith(f"ry_{t.prefix}_")]
        if not matches:
            raise NotFound(f"no token {ref!r} (see `runyard token list`)")
        if len(matches) > 1:
            raise Ambiguous(f"{ref!r} names {len(matches)} tokens; give its id (see `runyard token list`)")
        return matches[0]

    def revoke(self, ref: str) -> TokenInfo:
        token = self.find(ref)
        if token.revoked_at is None:
            with self.store._write() as conn:
                conn.execute(sa.update(api_tokens).where(api_tokens.c.id == token.id)
                             .values(revoked_at=self.store.clock()))
        return self.get(token.id)

    def authenticate(self, secret: str) -> TokenInfo | None:
        """The active token with this secret, or None."""
        with self.store._read() as conn:
            row = conn.execute(_select().where(api_tokens.c.token_sha256 == digest(secret))).one_or_none()
        if row is None or row.revoked_at is not None:
            return None
        return _row(row)

    def touch(self, token_id: int) -> None:
        with self.store._write() as conn:
            conn.execute(sa.update(api_tokens).where(api_tokens.c.id == token_id)
                         .values(last_used_at=self.store.clock()))
