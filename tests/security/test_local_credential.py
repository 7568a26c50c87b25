"""On a machine shared by several people, a local server serves only its home's owner (issue 14, item 2).

A loopback server needs a token like any other: the first one a home starts writes an admin token to
``$RUNYARD_HOME/local-token`` (mode 0600), which the CLI, the SDK's shipper and `runyard ui` of that
home use without being asked. Real ``runyard server`` processes; another user of the machine is
played by a client that has no access to the home (no token)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import psutil
import pytest
from tests.unit.server.conftest import LiveServer, free_port, home_env, migrate_postgres

from runyard.credential import LOCAL_TOKEN_NAME

RUNYARD = [sys.executable, "-m", "runyard.cli.main"]


def runyard(env: dict[str, str], *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*RUNYARD, *args], env=env, capture_output=True, text=True, timeout=120, cwd=cwd,
                          check=False)


@pytest.fixture
def server(db_url: str, tmp_path: Path) -> Iterator[LiveServer]:
    """``runyard server`` on loopback as a user starts it: no flag, no token created."""
    migrate_postgres(db_url)
    live = LiveServer(tmp_path / "server-home", db_url, insecure_local=False)
    live.start()
    yield live
    live.kill()


def owner_env(server: LiveServer) -> dict[str, str]:
    """The server's owner in another shell: the same home, RUNYARD_SERVER naming the server, no token."""
    return {**home_env(server.home, server.db_url), "RUNYARD_SERVER": server.url}


def test_a_fresh_local_server_serves_no_one_without_the_homes_credential(server: LiveServer) -> None:
    # Another user of the machine: connects to the port, has no token.
    listed = httpx.get(f"{server.url}/api/v1/runs", timeout=10)
    launched = httpx.post(f"{server.url}/api/v1/runs", json={"command": ["id"]}, timeout=10)
    assert (listed.status_code, launched.status_code) == (401, 401), (listed.text, launched.text)
    credential = server.home / LOCAL_TOKEN_NAME
    info = credential.stat()
    assert stat.S_IMODE(info.st_mode) == 0o600 and info.st_uid == os.getuid()
    token = credential.read_text().strip()
    ok = httpx.get(f"{server.url}/api/v1/runs", headers={"authorization": f"Bearer {token}"}, timeout=10)
    assert ok.status_code == 200, ok.text


def test_the_owners_cli_and_sdk_use_the_credential_without_being_told(server: LiveServer, tmp_path: Path) -> None:
    env = owner_env(server)
    train = tmp_path / "train.py"
    train.write_text(textwrap.dedent("""
        import runyard
        with runyard.init(project="shared-box", name="mine") as run:
            run.log({"loss": 0.5}, step=0)
    """))
    logged = subprocess.run([sys.executable, str(train)], env=env, cwd=tmp_path, capture_output=True, text=True,
                            timeout=120, check=False)
    assert logged.returncode == 0, logged.stderr
    token = (server.home / LOCAL_TOKEN_NAME).read_text().strip()
    deadline = time.monotonic() + 60
    while True:  # the SDK's shipper delivers in the background (asked here directly, not through the CLI)
        runs = httpx.get(f"{server.url}/api/v1/runs", params={"project": "shared-box"},
                         headers={"authorization": f"Bearer {token}"}, timeout=10).json()["items"]
        if runs or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert [r["name"] for r in runs] == ["mine"]
    listed = runyard(env, "ls", "--project", "shared-box")
    assert listed.returncode == 0 and "mine" in listed.stdout, listed.stderr
    assert runyard(env, "status").returncode == 0
    checks = {c["name"]: c for c in json.loads(runyard(env, "doctor", "--json").stdout)["checks"]}
    assert checks["credential"]["status"] == "ok"
    assert checks["credential"]["detail"].startswith(f"{server.home / LOCAL_TOKEN_NAME}: mode 0600")


def test_a_credential_file_others_can_read_is_refused_with_the_fix(server: LiveServer) -> None:
    credential = server.home / LOCAL_TOKEN_NAME
    credential.chmod(0o644)
    env = owner_env(server)
    refused = runyard(env, "ls")
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert f"{credential}: other users may read it (mode 0644)" in refused.stderr
    assert f"chmod 600 {credential}" in refused.stderr
    checks = {c["name"]: c for c in json.loads(runyard(env, "doctor", "--json").stdout)["checks"]}
    assert checks["credential"]["status"] == "fail"
    assert "other users may read it (mode 0644)" in checks["credential"]["detail"]
    server.kill()
    with pytest.raises(RuntimeError, match=r"other users may read it \(mode 0644\)"):
        server.start(timeout=20)  # nor does a server start on it


def test_insecure_local_restores_open_access_only_when_asked_and_only_on_loopback(db_url: str,
                                                                                 tmp_path: Path) -> None:
    migrate_postgres(db_url)
    live = LiveServer(tmp_path / "server-home", db_url, insecure_local=True)
    live.start()
    try:
        assert httpx.get(f"{live.url}/api/v1/runs", timeout=10).status_code == 200
        assert live.log is not None
        assert "warning: --insecure-local: while no token exists, anyone who can connect" in live.log.read_text()
        assert not (live.home / LOCAL_TOKEN_NAME).exists()
    finally:
        live.kill()
    env = home_env(tmp_path / "server-home", db_url)
    for host in ("0.0.0.0", "192.0.2.1"):
        refused = runyard(env, "server", "--insecure-local", "--host", host, "--allow-host", "box.example",
                          "--port", str(free_port()))
        assert refused.returncode == 2, refused.stderr
        assert f"--insecure-local serves without a token, so only on loopback, not on {host}" in refused.stderr


def _kill_server_on(port: int) -> None:
    """The server `runyard ui` started in the background (found by its port, killed by its pid)."""
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if "runyard.cli.main" in cmdline and "server" in cmdline and str(port) in cmdline:
            process.kill()
            process.wait(10)


def test_the_ui_link_logs_its_owners_browser_in_once(db_url: str, tmp_path: Path) -> None:
    migrate_postgres(db_url)
    port = free_port()
    env = home_env(tmp_path / "home", db_url)
    env.pop("DISPLAY", None)
    try:
        shown = runyard(env, "ui", "--no-browser", "--port", str(port))
        assert shown.returncode == 0, shown.stderr
        link = shown.stdout.strip()
        assert link.startswith(f"http://127.0.0.1:{port}/api/login?code=")
        with httpx.Client(follow_redirects=True, timeout=10) as browser:
            landed = browser.get(link)
            assert landed.status_code == 200 and str(landed.url) == f"http://127.0.0.1:{port}/"
            cookie = landed.history[0].headers["set-cookie"]
            assert "HttpOnly" in cookie and "samesite=strict" in cookie.lower() and "Path=/" in cookie
            runs = browser.get(f"http://127.0.0.1:{port}/api/v1/runs")
            assert runs.status_code == 200, runs.text
            # The cookie makes no cross-site request possible: other origins and form bodies stay refused.
            forged = browser.post(f"http://127.0.0.1:{port}/api/v1/runs", json={"command": ["id"]},
                                  headers={"origin": "http://evil.test"})
            form = browser.post(f"http://127.0.0.1:{port}/api/v1/runs", content=b"command=id",
                                headers={"content-type": "application/x-www-form-urlencoded"})
            assert (forged.status_code, form.status_code) == (403, 415)
        with httpx.Client(follow_redirects=True, timeout=10) as second:
            again = second.get(link)  # the code is used up
            assert again.status_code == 401 and "used up or has expired" in again.json()["error"]
            assert second.get(f"http://127.0.0.1:{port}/api/v1/runs").status_code == 401
        assert httpx.get(f"http://127.0.0.1:{port}/api/v1/runs", timeout=10).status_code == 401
        # A link may lead on to a page of this server (the demo's run page), never to another site.
        for wanted, landing in (("/runs/1", "/runs/1"), ("//evil.test/", "/"), ("https://evil.test/", "/")):
            fresh = runyard(env, "ui", "--no-browser", "--port", str(port)).stdout.strip()
            with httpx.Client(follow_redirects=True, timeout=10) as browser:
                landed = browser.get(f"{fresh}&next={quote(wanted, safe='')}")
                assert str(landed.url) == f"http://127.0.0.1:{port}{landing}", (wanted, landed.url)
    finally:
        _kill_server_on(port)
