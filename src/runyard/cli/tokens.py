"""``runyard token create|list|revoke``: on the configured database, or through RUNYARD_SERVER."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import orjson

from runyard.config import resolve

if TYPE_CHECKING:
    from runyard.credential import Credential


class _Local:
    def __init__(self) -> None:
        from runyard.store.home import open_store
        from runyard.store.tokens import Tokens

        self.opened = open_store(resolve())
        self.tokens = Tokens(self.opened.store)

    def create(self, role: str, name: str | None, project: str | None) -> dict[str, Any]:
        info, secret = self.tokens.create(role, name, project)
        return {**_out(info), "token": secret}

    def list(self, include_revoked: bool) -> list[dict[str, Any]]:
        return [_out(t) for t in self.tokens.list(include_revoked)]

    def revoke(self, ref: str) -> dict[str, Any]:
        return _out(self.tokens.revoke(ref))

    def close(self) -> None:
        self.opened.close()


class _Remote:
    def __init__(self, url: str, token: Credential | None) -> None:
        from runyard.client import Client

        self.client = Client(url, token)

    def create(self, role: str, name: str | None, project: str | None) -> dict[str, Any]:
        return dict(self.client.request("POST", "/tokens", json={"role": role, "name": name, "project": project})
                    .json())

    def list(self, include_revoked: bool) -> list[dict[str, Any]]:
        return list(self.client.get("/tokens", params={"include_revoked": include_revoked}))

    def revoke(self, ref: str) -> dict[str, Any]:
        from urllib.parse import quote

        return dict(self.client.request("DELETE", f"/tokens/{quote(ref, safe='')}").json())

    def close(self) -> None:
        self.client.close()


def _out(t: Any) -> dict[str, Any]:
    return {"id": t.id, "name": t.name, "role": t.role, "project": t.project, "prefix": t.prefix,
            "created_at": t.created_at, "last_used_at": t.last_used_at, "revoked_at": t.revoked_at}


def _backend() -> _Local | _Remote:
    settings = resolve()
    from runyard.credential import for_settings

    return _Remote(settings.server, for_settings(settings)) if settings.server else _Local()


def create(role: str, project: str | None, name: str | None, as_json: bool) -> int:
    backend = _backend()
    try:
        made = backend.create(role, name, project)
    finally:
        backend.close()
    if as_json:
        print(orjson.dumps(made, option=orjson.OPT_INDENT_2).decode())
        return 0
    scope = f" for project {made['project']}" if made["project"] else ""
    print(made["token"])
    import sys

    print(f"token {made['id']} ({made['name']}, {made['role']}{scope}) created. Copy it now: it is stored only "
          "as a hash and cannot be shown again. Clients send it with RUNYARD_TOKEN.", file=sys.stderr)
    return 0


def list_tokens(include_revoked: bool, as_json: bool) -> int:
    backend = _backend()
    try:
        rows = backend.list(include_revoked)
    finally:
        backend.close()
    if as_json:
        print(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
        return 0
    if not rows:
        print("no tokens (a loopback `runyard server` makes this home's credential, ~/.runyard/local-token, when it "
              "starts; `runyard token create --role admin` makes one to give out)")
        return 0
    from runyard.cli.runs import _table

    def when(t: float | None) -> str:
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(t)) if t else "-"

    print(_table(["ID", "NAME", "ROLE", "PROJECT", "PREFIX", "CREATED", "LAST USED", "REVOKED"],
                 [[str(r["id"]), r["name"], r["role"], r["project"] or "-", f"ry_{r['prefix']}_…",
                   when(r["created_at"]), when(r["last_used_at"]), when(r["revoked_at"])] for r in rows]))
    return 0


def revoke(ref: str) -> int:
    backend = _backend()
    try:
        t = backend.revoke(ref)
    finally:
        backend.close()
    print(f"token {t['id']} ({t['name']}) revoked")
    return 0
