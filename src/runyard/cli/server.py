"""``runyard server`` and ``runyard ui``."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time

from runyard.config import resolve
from runyard.errors import ConfigError

START_WAIT = 20.0


def _public_db(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def serve(host: str, port: int, db: str | None, artifacts: str | None, allowed_hosts: tuple[str, ...],
          max_connections: int | None = None, max_upload_mib: int | None = None) -> int:
    import uvicorn

    from runyard.server.app import create_app
    from runyard.server.capacity import Limits
    from runyard.server.connections import uvicorn_config
    from runyard.server.security import binds_all, is_loopback
    from runyard.store.home import open_store
    from runyard.store.tokens import Tokens

    if binds_all(host) and not allowed_hosts:
        # Any Host header would be accepted otherwise: the server must know the name it is reached by.
        raise ConfigError(f"listening on {host} (every interface) needs the name clients reach the server by: "
                         "add --allow-host NAME (repeatable), e.g. --allow-host runyard.example.org; "
                         "loopback names (localhost, 127.0.0.1) are always allowed")
    overrides = {k: v for k, v in (("db", db), ("artifacts", artifacts)) if v}
    # A server serves its own store, never another server: the agents and runs it starts inherit this
    # environment, and with RUNYARD_SERVER they would ship to a server instead of running.
    os.environ["RUNYARD_SERVER"] = ""
    os.environ.pop("RUNYARD_TOKEN", None)
    settings = resolve(overrides=overrides)
    opened = open_store(settings)
    try:
        tokens = Tokens(opened.store)
        if not is_loopback(host) and not tokens.any_active():
            raise ConfigError(f"refusing to listen on {host}: anyone on the network could use the server, and no "
                              "token exists yet. Create one first (`runyard token create --role admin --name "
                              "me`), then start the server again; clients set RUNYARD_TOKEN.")
        limits = Limits()
        if max_connections is not None:
            limits = dataclasses.replace(limits, max_connections=max_connections)
        if max_upload_mib is not None:
            limits = dataclasses.replace(limits, max_upload=max_upload_mib << 20)
        app = create_app(settings, opened.store, opened.artifacts, host, port, allowed_hosts, limits)
        outbox = app.state.server.outbox.start()  # acts on fired alerts: stops runs, delivers notices
        auth = "tokens required" if (not is_loopback(host) or tokens.any_active()) else "no tokens (single user)"
        shown = f"[{host}]" if ":" in host else host
        print(f"runyard server on http://{shown}:{port}  ({auth})\n  database  {_public_db(settings.db)}\n"
              f"  artifacts {settings.artifacts}\n  API       http://{shown}:{port}/api/v1  "
              f"(spec: /api/openapi.json)", flush=True)
        try:
            uvicorn.Server(uvicorn_config(app, host, port, limits)).run()
        finally:
            outbox.dispatcher.drain(timeout=5)
            outbox.close()
        return 0
    finally:
        opened.close()


def _health(url: str) -> dict[str, object] | None:
    """What the server at ``url`` says of itself; None if nothing answers there."""
    import httpx

    try:
        response = httpx.get(f"{url}/api/health", timeout=1.0)
    except httpx.HTTPError:
        return None
    if response.status_code == 401:
        return {}  # a server that wants a token: it answers, and says no more
    if response.status_code != 200:
        return None
    try:
        health = response.json()
    except ValueError:
        health = None
    if not isinstance(health, dict) or "schema" not in health:
        raise ConfigError(f"{url} answers, but it is not a runyard server: start this home's on another port "
                          "(runyard ui --port N)")
    return health


def ui(port: int, no_browser: bool) -> int:
    from runyard.spool.rundir import target_key

    settings = resolve()
    url = settings.server or f"http://127.0.0.1:{port}"
    health = None if settings.server else _health(url)
    if health is not None and health.get("store", target_key(settings)) != target_key(settings):
        raise ConfigError(f"{url} is a runyard server of another home or database, not of {settings.home}: "
                          f"open that one there, or start this home's on another port (runyard ui --port "
                          f"{port + 1})")
    if not settings.server and health is None:
        settings.home.mkdir(parents=True, exist_ok=True)
        log_path = settings.home / "server.log"
        with log_path.open("ab") as log:
            subprocess.Popen([sys.executable, "-m", "runyard.cli.main", "server", "--port", str(port),
                              "--db", settings.db, "--artifacts", str(settings.artifacts)],
                             stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                             close_fds=True, cwd=str(settings.home))
        deadline = time.monotonic() + START_WAIT
        while _health(url) is None:
            if time.monotonic() > deadline:
                raise ConfigError(f"the server did not start within {START_WAIT:g} s; see {log_path}")
            time.sleep(0.2)
        print(f"started the local server (log: {log_path})", file=sys.stderr)
    print(url)
    if not no_browser and (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        import webbrowser

        webbrowser.open(url)
    return 0


