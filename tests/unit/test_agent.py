"""The agent process: stopping a home's agents, and loops that survive any exception."""

from __future__ import annotations

import fcntl
import threading
import time
from pathlib import Path

import pytest
from tests.flow.test_execution import wait_for

import runyard.agent as agent
from runyard.agent import _Ingest, stop_agents
from runyard.config import resolve
from runyard.files import lock_held
from runyard.ingest import tailer as tailing
from runyard.sdk.agent_launch import agent_lock_path, ensure_agent


def test_stop_agents_ends_the_agent_and_spares_other_lock_holders(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    settings = resolve(environ={"RUNYARD_HOME": str(tmp_path / "home")}, cwd=tmp_path)
    ensure_agent(settings)
    lock = agent_lock_path(settings)
    deadline = time.monotonic() + 30
    while not (lock_held(lock) and lock.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert lock_held(lock)
    other = settings.home / "agents" / "not-an-agent.lock"
    with other.open("a") as held:  # holds the lock but wrote no pid, as a benchmark's stand-in does
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        stop_agents(settings.home)
        assert not lock_held(lock)
        assert lock_held(other)  # left alone (and this process, which holds it, was not signalled)


def test_the_agent_runs_no_pool_of_numerical_threads_beside_the_training(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The agent inherits the environment of whatever started it, often a training script that asked
    its BLAS for many threads. The agent's numpy work is small; a pool of BLAS threads spinning
    beside the training on the same cores would slow it for nothing."""
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "8")
    monkeypatch.setenv("OMP_NUM_THREADS", "8")
    settings = resolve(environ={"RUNYARD_HOME": str(tmp_path / "home")}, cwd=tmp_path)
    ensure_agent(settings)
    lock = agent_lock_path(settings)
    try:
        wait_for(lambda: lock_held(lock) and bool(lock.read_text().strip()), 30, "the agent")
        pid = int(lock.read_text())
        environ = dict(item.split("=", 1) for item in
                       Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in item)
        # One thread for each library numpy may use for BLAS: OpenBLAS, OpenMP, MKL.
        assert {key: environ.get(key) for key in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")} \
            == dict.fromkeys(("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"), "1")
    finally:
        stop_agents(settings.home)


class FlakyTailer:
    """A tailer whose first poll fails with an exception runyard does not define (a bug, a bad record)."""

    def __init__(self) -> None:
        self.polls = 0

    def poll(self) -> object:
        from runyard.ingest.tailer import PollReport

        self.polls += 1
        if self.polls == 1:
            raise KeyError("boom")
        return PollReport()


def test_the_ingest_loop_reports_an_unexpected_exception_and_goes_on(capsys: pytest.CaptureFixture[str]) -> None:
    tailer = FlakyTailer()
    ingest = _Ingest(tailer)
    thread = threading.Thread(target=ingest.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: tailer.polls >= 2 or not thread.is_alive(), 20, "a second poll")
        assert thread.is_alive() and tailer.polls >= 2
    finally:
        ingest.stop = True
        thread.join(10)
    err = capsys.readouterr().err
    assert "runyard agent: ingest: KeyError: 'boom'" in err
    assert "in poll" in err  # where it was raised: the traceback's last line


def test_the_shipping_loop_reports_an_unexpected_exception_and_goes_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    tailer = FlakyTailer()
    monkeypatch.setattr(tailing, "Tailer", lambda *args, **kwargs: tailer)
    monkeypatch.setattr(agent, "IDLE_EXIT", 0.0)  # leave after the first clean poll
    settings = resolve(environ={"RUNYARD_HOME": str(tmp_path / "home"), "RUNYARD_SERVER": "http://127.0.0.1:9"},
                       cwd=tmp_path)
    assert agent._ship(settings) == 0
    assert tailer.polls >= 2
    assert "runyard agent: shipping: KeyError: 'boom'" in capsys.readouterr().err


@pytest.mark.postgres
def test_an_agent_whose_database_is_gone_still_leaves_when_idle(pg_schema_url: str, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys
    from urllib.parse import parse_qs, urlsplit

    import sqlalchemy as sa

    from runyard.store.engine import create_engine
    from runyard.store.migrate import upgrade

    engine = create_engine(pg_schema_url)
    upgrade(engine)
    engine.dispose()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")},
           "RUNYARD_HOME": str(tmp_path / "home"), "RUNYARD_DB": pg_schema_url}
    (tmp_path / "home").mkdir()
    log = tmp_path / "agent.log"
    with log.open("ab") as out:
        agent_process = subprocess.Popen([sys.executable, "-m", "runyard.agent"], env=env, stdout=out, stderr=out,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        from runyard.store.sql import SqlStore

        store = SqlStore(create_engine(pg_schema_url))
        wait_for(lambda: bool(store.leases("agent:")), 30, "the agent to start scheduling")  # its first tick
        store.close()
        schema = parse_qs(urlsplit(pg_schema_url).query)["options"][0].split("=", 1)[1]
        admin = sa.create_engine(pg_schema_url.split("?")[0])
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()
        assert agent_process.wait(60) == 0  # every tick fails; failing is not working, so it leaves
        assert "runyard agent: scheduler:" in log.read_text()
    finally:
        if agent_process.poll() is None:
            agent_process.kill()
            agent_process.wait(10)
