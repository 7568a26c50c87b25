"""``runyard server`` and ``runyard ui``."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runyard.config import Settings, resolve
from runyard.errors import AccessDenied, ConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from runyard.store.tokens import Tokens

START_WAIT = 20.0


def _public_db(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


INSECURE_WARNING = ("warning: --insecure-local: while no token exists, anyone who can connect to this port (every user "
                    "of this machine) may read every run and launch commands as you")


def _local_credential(home: Path, tokens: Tokens) -> Path:
    """The home's local credential, made (or registered with this database) if needed: an admin token
    whose secret sits in a file only the home's owner can read."""
    from runyard import credential

    secret = credential.read_local(home)  # refuses a file that others could read
    if secret is not None and credential.prefix_of(secret) is not None:
        known = tokens.authenticate(secret)
        if known is not None:
            return credential.local_token_path(home)
        with contextlib.suppress(Exception):  # not in this database yet (another --db): register it
            tokens.adopt(secret, "admin", credential.LOCAL_TOKEN_LABEL)
            return credential.local_token_path(home)
    # None yet, or revoked (or unreadable as a token): a new one replaces it.
    _, secret = tokens.create("admin", credential.LOCAL_TOKEN_LABEL)
    return credential.write_local(home, secret)


def lab_socket(host: str, port: int, api_port: int) -> socket.socket:
    """The lab origin's listening socket (``--lab-port``), bound before anything starts, so that a
    port in use is said at once."""
    if port == api_port:
        raise ConfigError(f"--lab-port {port} is the API's port: JupyterLab needs an origin of its own, so "
                          "another port (or --lab-port 0 to serve no JupyterLab)")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as e:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port} for JupyterLab (--lab-port, default the port + 1): "
                          f"{e.strerror or e}; another program may use it: choose another with --lab-port N, or "
                          "serve no JupyterLab with --lab-port 0") from None
    sock.listen(2048)
    return sock


def _serve(api_config: Any, lab: tuple[Any, socket.socket] | None) -> None:
    """Serve the API and the lab origin (uvicorn configs; the lab's with its socket, or None) on one
    event loop: the API's server handles the signals, and the lab's stops with it."""
    import asyncio

    import uvicorn

    class QuietServer(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Any:
            yield  # the API's server has them

    api = uvicorn.Server(api_config)

    async def both() -> None:
        if lab is None:
            await api.serve()
            return
        lab_server = QuietServer(lab[0])
        lab_task = asyncio.ensure_future(lab_server.serve(sockets=[lab[1]]))
        try:
            await api.serve()
        finally:
            lab_server.should_exit = True
            with contextlib.suppress(Exception):
                await lab_task

    with asyncio.Runner(loop_factory=api.config.get_loop_factory()) as runner:
        runner.run(both())


def serve(host: str, port: int, db: str | None, artifacts: str | None, allowed_hosts: tuple[str, ...],
          insecure_local: bool = False, limits: Mapping[str, Any] | None = None, lab_port: int | None = None) -> int:
    """``limits``: fields of ``server.capacity.Limits`` to set, by name (the flags of ``runyard server``).
    ``lab_port``: where JupyterLabs are served (server/lab.py); None: ``port`` + 1; 0: nowhere."""
    from runyard.server.app import create_app
    from runyard.server.capacity import Limits
    from runyard.server.connections import uvicorn_config
    from runyard.server.security import binds_all
    from runyard.store.home import open_store
    from runyard.store.tokens import Tokens
    from runyard.wire import is_loopback

    if insecure_local and not is_loopback(host):
        raise ConfigError(f"--insecure-local serves without a token, so only on loopback, not on {host}: drop "
                          "--insecure-local (clients then need a token), or listen on 127.0.0.1")
    if binds_all(host) and not allowed_hosts:
        # Any Host header would be accepted otherwise: the server must know the name it is reached by.
        raise ConfigError(f"listening on {host} (every interface) needs the name clients reach the server by: "
                         "add --allow-host NAME (repeatable), e.g. --allow-host runyard.example.org; "
                         "loopback names (localhost, 127.0.0.1) are always allowed")
    if lab_port is None:
        lab_port = port + 1 if port < 65535 else 0
    lab_sock = lab_socket(host, lab_port, port) if lab_port else None
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
        auth = "tokens required"
        if insecure_local:
            print(INSECURE_WARNING, file=sys.stderr, flush=True)
            if not tokens.any_active():
                auth = "no tokens: --insecure-local, open to every local user"
        elif is_loopback(host):
            auth = f"tokens required; this home's credential: {_local_credential(settings.home, tokens)}"
        capacity = dataclasses.replace(Limits(), **(limits or {}))
        app = create_app(settings, opened.store, opened.artifacts, host, port, allowed_hosts, capacity,
                         insecure_local=insecure_local, lab_port=lab_port)
        outbox = app.state.server.outbox.start()  # acts on fired alerts: stops runs, delivers notices
        health = app.state.server.health_watch.start()  # the health check's view of the database
        from runyard.wire import url_host

        shown = url_host(host)
        print(f"runyard server on http://{shown}:{port}  ({auth})\n  database  {_public_db(settings.db)}\n"
              f"  artifacts {settings.artifacts}\n  API       http://{shown}:{port}/api/v1  "
              f"(spec: /api/openapi.json)", flush=True)
        lab = None
        if lab_sock is not None:
            from runyard.server.lab import lab_app

            print(f"  JupyterLab http://{shown}:{lab_port}/lab/RUN_ID/  (an origin of its own; open one from "
                  "the dashboard or with `runyard notebook --url RUN`)", flush=True)
            lab = (uvicorn_config(lab_app(app.state.server, app.state.policy, app.state.server.lab_access, lab_port),
                                  host, lab_port, capacity), lab_sock)
        try:
            _serve(uvicorn_config(app, host, port, capacity), lab)
        finally:
            health.close()
            outbox.dispatcher.drain(timeout=5)
            outbox.close()
        return 0
    finally:
        opened.close()
        if lab_sock is not None:
            lab_sock.close()


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


def _login_link(url: str, settings: Settings, local: bool) -> str:
    """A link that logs the browser in once (``/api/login?code=...``), asked with this home's token;
    the plain URL when there is no token to ask with."""
    from runyard import credential
    from runyard.client import Client

    given = credential.for_settings(settings)
    if given is None and local:
        # This home's servers make its credential before they answer: one without is another's.
        raise ConfigError(f"{url} is a runyard server of another home or database, not of {settings.home}: "
                          "open that one there, or start this home's on another port (runyard ui --port "
                          f"{int(url.rsplit(':', 1)[1]) + 2})")
    if given is None:
        return url
    if local:
        # The server on this port must prove it is this home's before it sees the credential.
        given = credential.Credential(given.token, given.source)
    from runyard.spool.rundir import target_key

    client = Client(url, given, retries=0)
    try:
        try:
            store = client.health().get("store")
        except AccessDenied:
            if not local:
                raise
            store = None  # it cannot prove it holds this home's credential
        if local and store != target_key(settings):
            raise ConfigError(f"{url} is a runyard server of another home or database, not of {settings.home}: "
                              "open that one there, or start this home's on another port (runyard ui --port "
                              f"{int(url.rsplit(':', 1)[1]) + 2})")
        path = client.request("POST", "/login-codes").json()["path"]
    finally:
        client.close()
    return f"{url}{path}"


def ui(port: int, no_browser: bool, insecure_local: bool = False) -> int:
    from runyard import credential
    from runyard.spool.rundir import target_key

    settings = resolve()
    url = settings.server or f"http://127.0.0.1:{port}"
    if not settings.server:
        credential.read_local(settings.home)  # a credential others could read: say so before anything
    health = None if settings.server else _health(url)
    if health and health.get("store", target_key(settings)) != target_key(settings):
        raise ConfigError(f"{url} is a runyard server of another home or database, not of {settings.home}: "
                          f"open that one there, or start this home's on another port (runyard ui --port "
                          f"{port + 2})")
    if not settings.server and health is None:
        settings.home.mkdir(parents=True, exist_ok=True)
        log_path = settings.home / "server.log"
        with log_path.open("ab") as log:
            start = log.tell()
            started = subprocess.Popen([sys.executable, "-m", "runyard.cli.main", "server", "--port", str(port),
                              "--db", settings.db, "--artifacts", str(settings.artifacts),
                              *(["--insecure-local"] if insecure_local else [])],
                             stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                             close_fds=True, cwd=str(settings.home))
        deadline = time.monotonic() + START_WAIT
        while (health := _health(url)) is None:
            if started.poll() is not None:  # it said why (a port in use, say) in its log
                said = log_path.read_bytes()[start:].decode(errors="replace").strip().splitlines()
                raise ConfigError(f"the server did not start: {said[-1] if said else 'no reason given'} "
                                  f"(log: {log_path})")
            if time.monotonic() > deadline:
                raise ConfigError(f"the server did not start within {START_WAIT:g} s; see {log_path}")
            time.sleep(0.2)
        print(f"started the local server (log: {log_path})", file=sys.stderr)
        if insecure_local:
            print(INSECURE_WARNING, file=sys.stderr)
    # An open server (--insecure-local) answered its health to anyone: its plain URL is the link.
    link = url if health and not settings.server else _login_link(url, settings, local=not settings.server)
    print(link)
    if not no_browser and (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        import webbrowser

        webbrowser.open(link)
    return 0
