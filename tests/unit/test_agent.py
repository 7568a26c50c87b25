"""Stopping a home's agents: the real one ends, a lock holder that is not an agent is left alone."""

from __future__ import annotations

import fcntl
import time
from pathlib import Path

import pytest

from runyard.agent import stop_agents
from runyard.config import resolve
from runyard.files import lock_held
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
