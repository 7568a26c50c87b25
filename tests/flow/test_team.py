"""Team mode: two agents, each with its own home, share one queue on one PostgreSQL database.

Real agent processes (``python -m runyard.agent``), real supervisors and commands; each command
appends to a file when it starts and when it ends, so the test counts starts without trusting the
store it checks.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.flow.test_execution import wait_for

from runyard.agent import stop_agents
from runyard.config import Settings, resolve
from runyard.exec.submit import Submission, submit
from runyard.files import lock_held
from runyard.sdk.agent_launch import agent_lock_path
from runyard.store.engine import create_engine
from runyard.store.migrate import upgrade
from runyard.store.sql import SqlStore
from runyard.types import RunStatus

pytestmark = [pytest.mark.timeout(120), pytest.mark.postgres]

SLOTS = 2
#: Seconds an agent's claims last without renewal (RUNYARD_LEASE): short, so a dead agent's runs are
#: judged within the test.
LEASE = "2"

# Appends "<run id> <home> start|end <time> <pid>" to $STARTS; a gated run waits for $GATE first.
JOB = """
import os, sys, time
def note(what):
    line = f"{os.environ['RUNYARD_RUN_ID']} {os.environ['RUNYARD_HOME']} {what} {time.time()} {os.getpid()}\\n"
    fd = os.open(os.environ["STARTS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, line.encode())
    os.close(fd)
note("start")
if sys.argv[1] == "gate":
    while not os.path.exists(os.environ["GATE"]):
        time.sleep(0.05)
else:
    time.sleep(float(sys.argv[1]))
note("end")
"""


@dataclass
class Agent:
    settings: Settings
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None

    @property
    def home(self) -> Path:
        return self.settings.home

    def start(self) -> None:
        log = (self.home / "agent.log").open("ab")
        self.process = subprocess.Popen([sys.executable, "-m", "runyard.agent"], env=self.env, cwd=self.home,
                                        stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        log.close()
        lock, process = agent_lock_path(self.settings), self.process
        wait_for(lambda: (lock_held(lock) and lock.read_text().strip() == str(process.pid))
                 or process.poll() is not None, 30, "the agent to start")
        assert process.poll() is None, (self.home / "agent.log").read_text()

    def kill(self) -> None:
        """SIGKILL the agent, and every supervisor and command it started: the machine went away."""
        import psutil

        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        for pid_file in (self.home / "runs").glob("*/supervisor.pid"):
            try:
                supervisor = psutil.Process(int(pid_file.read_text()))
                doomed = [supervisor, *supervisor.children(recursive=True)]
            except (psutil.NoSuchProcess, ValueError):
                continue
            for process in doomed:
                with contextlib.suppress(psutil.NoSuchProcess):
                    process.kill()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(20)


@dataclass
class Team:
    url: str
    project: Path
    starts: Path
    gate: Path
    a: Agent
    b: Agent
    store: SqlStore

    def queue(self, argument: str, name: str, by: Agent | None = None) -> int:
        """Queue a run from the home of ``by`` (default a), which starts that home's agent."""
        sub = Submission(command=[sys.executable, "job.py", argument], shell=False, cwd=self.project, name=name,
                         env={"STARTS": str(self.starts), "GATE": str(self.gate)})
        return submit((by or self.a).settings, sub).number

    def lines(self) -> list[tuple[str, str, str, float, int]]:
        if not self.starts.exists():
            return []
        out = []
        for line in self.starts.read_text().splitlines():
            run_id, home, what, at, pid = line.split()
            out.append((run_id, home, what, float(at), int(pid)))
        return out

    def status(self, number: int) -> RunStatus:
        return self.store.get_run(number).status


@pytest.fixture
def team(pg_schema_url: str, tmp_path: Path) -> Iterator[Team]:
    engine = create_engine(pg_schema_url)
    upgrade(engine)
    project = tmp_path / "project"
    project.mkdir()
    (project / "job.py").write_text(JOB)
    keep = {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")}
    agents = []
    for name in ("a", "b"):
        home = tmp_path / f"home-{name}"
        home.mkdir()
        env = {**keep, "RUNYARD_HOME": str(home), "RUNYARD_DB": pg_schema_url,
               "RUNYARD_ARTIFACTS": str(tmp_path / "shared-artifacts"), "RUNYARD_SLOTS": str(SLOTS),
               "RUNYARD_SYSTEM_INTERVAL": "0", "RUNYARD_LEASE": LEASE}
        agents.append(Agent(resolve(environ=env, cwd=project), env))
    store = SqlStore(engine)
    team = Team(pg_schema_url, project, tmp_path / "starts.txt", tmp_path / "gate", agents[0], agents[1], store)
    try:
        yield team
    finally:
        team.gate.touch()
        for agent in agents:
            agent.stop()
            stop_agents(agent.home)  # any a command started (`runyard stop` in a's home starts a's)
        store.close()


def peak(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = highest = 0
    for _, delta in events:
        running += delta
        highest = max(highest, running)
    return highest


def test_two_agents_start_each_run_once_and_take_over_a_dead_agent_s_queue(team: Team) -> None:
    team.a.start()
    team.b.start()
    quick = [team.queue("0.6", f"quick{i}") for i in range(20)]
    wait_for(lambda: all(team.status(n).is_terminal() for n in quick), 60, "the 20 quick runs to end")
    assert [team.status(n) for n in quick] == [RunStatus.FINISHED] * 20
    lines = team.lines()
    starts: dict[str, int] = {}
    for run_id, *_ in (x for x in lines if x[2] == "start"):
        starts[run_id] = starts.get(run_id, 0) + 1
    assert sorted(starts.values()) == [1] * 20, f"runs started more than once: {starts}"
    spans: dict[str, dict[str, float]] = {}
    homes: dict[str, str] = {}
    for run_id, home, what, at, _ in lines:
        spans.setdefault(run_id, {})[what] = at
        homes[run_id] = home
    by_home: dict[str, list[tuple[float, float]]] = {}
    for run_id, span in spans.items():
        by_home.setdefault(homes[run_id], []).append((span["start"], span["end"]))
    assert sorted(by_home) == sorted([str(team.a.home), str(team.b.home)]), "both agents should have run some"
    assert all(peak(spans) <= SLOTS for spans in by_home.values()), {h: peak(s) for h, s in by_home.items()}
    # Each agent counts only its own runs against its slots: together they ran more than one agent's worth.
    assert peak([s for spans in by_home.values() for s in spans]) > SLOTS

    gated = [team.queue("gate", f"gated{i}") for i in range(10)]

    def running_per_home() -> dict[str, int]:
        counts: dict[str, int] = {}
        for run_id, home, what, *_ in team.lines():
            if what == "start" and run_id not in spans:
                counts[home] = counts.get(home, 0) + 1
        return counts

    seen: list[dict[str, int]] = []

    def both_full() -> bool:
        seen.append(running_per_home())
        return seen[-1] == {str(team.a.home): SLOTS, str(team.b.home): SLOTS}

    try:
        wait_for(both_full, 30, "each agent to fill its slots with gated runs")
    except AssertionError as e:
        raise AssertionError(f"{e}; gated runs started per home: {seen[-1]}") from None
    on_a = {run_id for run_id, home, what, *_ in team.lines() if what == "start" and home == str(team.a.home)
            and run_id not in spans}
    team.a.kill()
    killed_at = time.time()
    team.gate.touch()
    wait_for(lambda: all(team.status(n).is_terminal() for n in gated), 60, "every gated run to end")
    final = {team.store.get_run(n).id: team.store.get_run(n) for n in gated}
    assert {i for i, r in final.items() if r.status is RunStatus.LOST} == on_a
    assert all(r.status is RunStatus.FINISHED for i, r in final.items() if i not in on_a)
    for run_id in on_a:
        lost = final[run_id]
        assert lost.ended_at is not None and lost.ended_at >= killed_at + float(LEASE) * 0.5
        assert "lease" in (lost.status_message or ""), lost.status_message
    counted: dict[str, int] = {}
    for run_id, *_ in (x for x in team.lines() if x[2] == "start"):
        counted[run_id] = counted.get(run_id, 0) + 1
    assert len(counted) == 30 and set(counted.values()) == {1}, f"runs started more than once: {counted}"


def test_stopping_a_run_another_agent_holds_stops_its_process(team: Team) -> None:
    import psutil

    team.b.start()  # only b runs anything; a's home is where the teammate types `runyard stop`
    # Queued from b's home: queueing starts the home's agent, and one of a's could take the run first.
    number = team.queue("gate", "held-by-b", by=team.b)
    wait_for(lambda: any(x[2] == "start" for x in team.lines()), 30, "the run to start on b")
    pid = next(x[4] for x in team.lines() if x[2] == "start")
    assert team.lines()[0][1] == str(team.b.home)
    result = subprocess.run([sys.executable, "-m", "runyard.cli.main", "stop", str(number)], env=team.a.env,
                            cwd=team.project, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr

    def gone() -> bool:
        try:
            return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    wait_for(gone, 20, f"the command on b to be stopped (`runyard stop` said: {result.stdout.strip()!r})")
    assert "requested" in result.stdout, result.stdout
    wait_for(lambda: team.status(number).is_terminal(), 20, "the run to end")
    run = team.store.get_run(number)
    assert run.status is RunStatus.STOPPED
    assert run.exit_code is not None  # recorded by its supervisor, not declared by the requester
