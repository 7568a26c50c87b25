"""What the README documents does what it says (as datasette's docs tests do, and then some).

Every setting, and every option of `runyard run`, has a check here that sets it and observes what
changes: a setting that is documented but does nothing fails its check, and a new setting or option
without a check fails ``test_every_setting_and_run_option_has_a_behaviour_check``. The README's
settings table must also give each setting's real default, and every command must be in it.

The checks run in this process where they can (the CLI through click's runner, a scheduler of our
own while the home's agent lock is held, so that no real agent takes the queued runs), and in a
child process where the SDK's process-wide state is the subject.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from runyard.agent import stop_agents
from runyard.cli.main import cli
from runyard.config import SETTINGS, Settings, resolve

README = (Path(__file__).parents[2] / "README.md").read_text()
GIB = 1 << 30


def test_every_command_is_documented_and_has_help() -> None:
    for name, command in cli.commands.items():
        assert f"runyard {name}" in README, name
        assert command.help and len(command.help) > 20, name


def test_the_documentation_stands_on_its_own_and_its_links_resolve() -> None:
    # A user of the public project has the repository only: nothing may point outside it.
    root = Path(__file__).parents[2]
    pages = [root / "README.md", root / "DEVELOPERS.md", *sorted((root / "docs").glob("*.md"))]
    for page in pages:
        text = page.read_text()
        assert "../shared" not in text, page
        for target in re.findall(r"\]\(([^)#]+\.md)\)", text):
            assert (page.parent / target).is_file(), (page, target)


def test_the_settings_table_gives_each_setting_and_its_real_default() -> None:
    rows = {m.group(1): (m.group(2), m.group(3)) for m in
            re.finditer(r"^\| `(\w+)` \| `(RUNYARD_\w+)` \| ([^|]+) \|", README, re.MULTILINE)}
    assert sorted(rows) == sorted(s.key for s in SETTINGS)
    home = Path("/h")
    for setting in SETTINGS:
        env, default = rows[setting.key]
        assert env == setting.env, setting.key
        literal = setting.default(home)
        if literal is not None and "/h" not in literal:
            assert default.strip() == f"`{literal}`", (setting.key, default, literal)


# -- a home to try things in ----------------------------------------------------------------------

class Home:
    """A fresh home and project directory; ``env`` is what a user's shell would hold."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **settings: str) -> None:
        self.root = tmp_path
        self.home = tmp_path / "home"
        self.project = tmp_path / "project"
        self.project.mkdir(exist_ok=True)
        (self.project / "train.py").write_text("print('hi')\n")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")}
        self.env.update({"RUNYARD_HOME": str(self.home), "RUNYARD_SYSTEM_INTERVAL": "0"})
        self.env.update({f"RUNYARD_{k.upper()}": v for k, v in settings.items()})
        self.monkeypatch = monkeypatch
        monkeypatch.chdir(self.project)
        for key in [k for k in os.environ if k.startswith("RUNYARD_")]:
            monkeypatch.delenv(key)

    @property
    def settings(self) -> Settings:
        return resolve(environ=self.env, cwd=self.project)

    def runyard(self, *args: str, check: bool = True) -> Any:
        result = CliRunner().invoke(cli, list(args), env=self.env, catch_exceptions=False)
        if check:
            assert result.exit_code == 0, result.output
        return result

    def queue(self, *options: str) -> int:
        """`runyard run --json OPTIONS -- python train.py`: the queued run's number."""
        out = self.runyard("run", "--json", *options, "--", sys.executable, "train.py").output
        return int(json.loads(out.strip().splitlines()[-1])["number"])

    @contextlib.contextmanager
    def no_agent(self) -> Iterator[None]:
        """Hold this home's agent lock: commands find "an agent" running and start none, so queued runs
        wait for the scheduler a check runs itself, and logged records stay in the spool."""
        from runyard.sdk.agent_launch import agent_lock_path

        path = agent_lock_path(self.settings)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as held:
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
            yield

    def store(self) -> Any:
        from runyard.store.home import open_store

        return open_store(self.settings)

    def script(self, body: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
        path = self.root / "script.py"
        path.write_text(textwrap.dedent(body))
        result = subprocess.run([sys.executable, str(path)], env={**self.env, **extra_env}, cwd=self.project,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        return result


class Recorder:
    """An executor that starts nothing and remembers the specs it was handed."""

    name = "local"

    def __init__(self) -> None:
        self.specs: list[Any] = []

    def submit(self, spec: Any) -> None:
        self.specs.append(spec)

    def stop(self, run_id: str) -> bool:
        return False

    def alive(self, run_id: str) -> bool:
        return False

    def ended(self, run_id: str) -> str | None:
        return None

    def forget(self, store: object) -> None:
        pass

    def submitted(self, run_id: str) -> bool:
        return any(s.run_id == run_id for s in self.specs)


def schedule(home: Home, store: Any, cpus: int = 2, memory: int = 4 * GIB, gpus: int = 0,
             slots: int | None = None) -> tuple[Any, Recorder]:
    """This home's scheduler, on a machine of the given size (slots: from the settings)."""
    from runyard.exec.scheduler import Machine, Scheduler

    settings = home.settings
    machine = Machine("docs-host", slots or Machine.here(settings, gpus).slots, gpus, cpus, memory)
    recorder = Recorder()
    return Scheduler(store, settings, recorder, gpus, agent="docs-agent", machine=machine), recorder


# -- settings ---------------------------------------------------------------------------------------

def check_db(home: Home) -> None:
    elsewhere = home.root / "elsewhere.db"
    home.env["RUNYARD_DB"] = str(elsewhere)
    home.runyard("ls")
    assert elsewhere.is_file() and not (home.home / "runyard.db").exists()


def check_artifacts(home: Home) -> None:
    blobs = home.root / "blobs"
    home.env["RUNYARD_ARTIFACTS"] = str(blobs)
    with home.no_agent():
        home.queue()
    assert any(p.is_file() for p in blobs.rglob("*")), "the snapshot went elsewhere"


def check_s3_endpoint(home: Home) -> None:
    # The endpoint is where an s3:// store is looked for: doctor reports it, and what is wrong with it.
    home.env.update({"RUNYARD_ARTIFACTS": "s3://runyard-docs/store", "RUNYARD_S3_ENDPOINT": "http://127.0.0.1:1",
                     "AWS_ACCESS_KEY_ID": "docs", "AWS_SECRET_ACCESS_KEY": "docs"})
    checks = {c["name"]: c for c in json.loads(home.runyard("doctor", "--json", check=False).output)["checks"]}
    assert checks["artifacts"]["status"] == "fail", checks["artifacts"]
    assert "http://127.0.0.1:1" in checks["artifacts"]["detail"], checks["artifacts"]
    assert "cannot reach" in checks["artifacts"]["detail"], checks["artifacts"]


class Listener:
    """A loopback HTTP server that answers 401 and remembers what it was asked."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str | None]] = []
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                listener.requests.append((self.path, self.headers.get("authorization")))
                self.send_response(401)
                self.send_header("content-type", "application/json")
                body = b'{"error": "no"}'
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


def check_server(home: Home) -> None:
    listener = Listener()
    try:
        home.env["RUNYARD_SERVER"] = listener.url
        home.runyard("ls", check=False)
        assert any(path.startswith("/api/v1/") for path, _ in listener.requests), listener.requests
    finally:
        listener.close()


def check_token(home: Home) -> None:
    listener = Listener()
    try:
        home.env.update({"RUNYARD_SERVER": listener.url, "RUNYARD_TOKEN": "ry_docs_check"})
        home.runyard("ls", check=False)
        # The token is offered (its prefix, asking the server to prove it holds it), and not sent to a
        # server that cannot.
        assert any(path.startswith("/api/proof?prefix=docs&") for path, _ in listener.requests), listener.requests
        assert all(auth is None for _, auth in listener.requests), listener.requests
    finally:
        listener.close()


def check_ray(home: Home) -> None:
    home.env["RUNYARD_RAY"] = "127.0.0.1:1"
    checks = {c["name"]: c for c in json.loads(home.runyard("doctor", "--json", check=False).output)["checks"]}
    assert "127.0.0.1:1" in checks["ray"]["detail"], checks["ray"]


def check_node_server(home: Home) -> None:
    # What a Ray run's job is told to ship to; without it, runs cannot go to Ray and the error says so.
    from types import SimpleNamespace

    from runyard.errors import ConfigError
    from runyard.exec.ray import RayExecutor

    spec = spec_of(home)  # a run's launch spec, as a scheduler hands it to an executor
    home.env["RUNYARD_RAY"] = "http://127.0.0.1:1"
    jobs: list[dict[str, Any]] = []
    opened = home.store()
    try:
        for server in (None, "http://yard.internal:8765"):
            if server is not None:
                home.env["RUNYARD_NODE_SERVER"] = server
            executor = RayExecutor(home.settings, opened.store, opened.artifacts)
            executor._jobs = SimpleNamespace(submit_job=lambda **job: jobs.append(job))
            if server is None:
                with pytest.raises(ConfigError, match="RUNYARD_NODE_SERVER"):
                    executor.submit(spec)
            else:
                executor.submit(spec)
    finally:
        opened.close()
    assert [job["runtime_env"]["env_vars"]["RUNYARD_SERVER"] for job in jobs] == ["http://yard.internal:8765"]


def check_executor(home: Home) -> None:
    # The setting picks where runs go; a name runyard has no executor for is refused before queueing.
    home.env["RUNYARD_EXECUTOR"] = "local"
    assert run_of(home).executor == "local"
    home.env["RUNYARD_EXECUTOR"] = "the-cloud"
    refused = home.runyard("run", "--", "true", check=False)
    assert refused.exit_code == 2 and "RUNYARD_EXECUTOR" in refused.output, refused.output


def check_project(home: Home) -> None:
    home.env["RUNYARD_PROJECT"] = "vision"
    with home.no_agent():
        number = home.queue()
    opened = home.store()
    try:
        assert opened.store.get_run(number).project == "vision"
    finally:
        opened.close()


def check_slots(home: Home) -> None:
    from runyard.store.newrun import NewRun
    from runyard.types import RunStatus

    for slots, started in (("1", 1), ("3", 3)):
        home.env["RUNYARD_SLOTS"] = slots
        opened = home.store()
        try:
            for _ in range(4):
                opened.store.create_run(NewRun(project="p", status=RunStatus.QUEUED, executor="local",
                                               command=["true"]))
            scheduler, _ = schedule(home, opened.store)
            assert scheduler.tick()[0] == started
            for run in opened.store.runs_with_status([RunStatus.QUEUED, RunStatus.STARTING]):
                opened.store.update_run(run.number, _ended())
        finally:
            opened.close()


def _ended() -> Any:
    from runyard.store.api import RunPatch
    from runyard.types import RunStatus

    return RunPatch(status=RunStatus.STOPPED)


def check_lease(home: Home) -> None:
    """A run whose agent went away is marked lost once the agent's lease lapses: after `lease` seconds."""
    from runyard.store.newrun import NewRun
    from runyard.types import RunStatus

    home.env["RUNYARD_LEASE"] = "5"
    opened = home.store()
    try:
        store = opened.store
        now = [1000.0]
        store.clock = lambda: now[0]
        number = store.create_run(NewRun(project="p", status=RunStatus.QUEUED, executor="local",
                                         command=["true"])).number
        store.take_lease("agent:gone", "gone", 5)
        store.claim(number, [], "gone", "host-gone")
        store.mark_submitted(number, "gone")
        now[0] += 6
        scheduler, _ = schedule(home, store)
        scheduler.tick()
        assert store.get_run(number).status is RunStatus.LOST  # the default lease (30 s) would still hold
    finally:
        opened.close()


FSYNC_COUNT = """
import os, time, runyard
from runyard.sdk import writer
calls = [0]
def counted(sync):
    def counting(*args):
        calls[0] += 1
        return sync(*args)
    return counting
os.fsync = counted(os.fsync)
# The current segment is forced to disk with msync over what was written (libc, through ctypes).
make_msync = writer._msync_function
writer._msync_function = lambda: counted(make_msync() or writer._fsync_whole)
run = runyard.init(project="docs")
for step in range(8):  # eight flushes, each after the writer's interval
    run.log({"x": float(step)}, step=step)
    time.sleep(0.15)
run.finish(wait=False)
print(calls[0])
"""


def check_fsync(home: Home) -> None:
    with home.no_agent():
        never = int(home.script(FSYNC_COUNT, RUNYARD_FSYNC="never").stdout.split()[-1])
        always = int(home.script(FSYNC_COUNT, RUNYARD_FSYNC="always").stdout.split()[-1])
    assert always >= never + 6, (never, always)  # each flush forced to disk


def check_system_interval(home: Home) -> None:
    body = """
        import time, runyard
        run = runyard.init(project="docs", name="sampled")
        time.sleep(1.0)
        run.finish(wait=False)
    """
    with home.no_agent():
        home.script(body, RUNYARD_SYSTEM_INTERVAL="0.2")
    home.runyard("sync")
    opened = home.store()
    try:
        keys = [s.key for s in opened.store.list_series(opened.store.get_run("sampled").number)]
    finally:
        opened.close()
    assert any(k.startswith("system/") for k in keys), keys


def check_finish_timeout(home: Home) -> None:
    body = """
        import time, runyard
        run = runyard.init(project="docs")
        run.log({"x": 1.0})
        started = time.monotonic()
        run.finish()  # nothing ingests (the agent lock is held): it waits finish_timeout, then returns
        print(time.monotonic() - started)
    """
    with home.no_agent():
        result = home.script(body, RUNYARD_FINISH_TIMEOUT="0.5")
    assert float(result.stdout.split()[-1]) < 10.0  # not the default 30 s


def first_launch_spec(home: Home) -> Any:
    """What the scheduler hands the supervisor of a run queued now (with ``home.env`` as it is)."""
    with home.no_agent():
        home.queue()
    opened = home.store()
    try:
        scheduler, recorder = schedule(home, opened.store)
        scheduler.tick()
    finally:
        opened.close()
    return recorder.specs[0]


def check_outputs_interval(home: Home) -> None:
    """The supervisor is told (the upload while a run goes on is in tests/flow/test_execution.py's
    test_a_checkpoint_can_be_copied_while_the_run_is_still_running)."""
    home.env["RUNYARD_OUTPUTS_INTERVAL"] = "7"
    assert first_launch_spec(home).outputs_interval == 7.0


def check_output_limit(home: Home) -> None:
    """The supervisor is told, in bytes (a file over it is not kept: tests/flow/test_run_outputs.py's
    test_files_a_script_writes_anywhere_in_its_directory_are_kept_and_can_be_copied_and_mounted)."""
    home.env["RUNYARD_OUTPUT_LIMIT"] = "3"
    assert first_launch_spec(home).output_limit == 3 << 20


def check_big_code_files(home: Home) -> None:
    """The supervisor is told (what each choice does: tests/flow/test_run_outputs.py's
    test_a_script_writing_into_a_shared_big_file_is_told_why_and_a_copy_setting_lets_it)."""
    home.env["RUNYARD_BIG_CODE_FILES"] = "copy"
    assert first_launch_spec(home).big_code_files == "copy"


QUEUE_BURST = """
import errno, time, runyard
from runyard.spool import segment
segment.FIRST_SEGMENT_BYTES = segment.SEGMENT_BYTES = 4096
run = runyard.init(project="docs")
def full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")
segment.os.posix_fallocate = full  # from now on the spool's disk is full
for step in range(5_000):
    run.log({"x": 1.0}, step=step)
writer = run._writer
print(writer.pending(), writer.lost_records)
"""


def check_queue_limit(home: Home) -> None:
    # While the disk refuses the spool, records wait in memory up to queue_limit; more are lost, and
    # counted. (os is the real os module: the patch ends with the script.)
    with home.no_agent():
        held, lost = map(int, home.script(QUEUE_BURST, RUNYARD_QUEUE_LIMIT="1000",
                                          RUNYARD_FINISH_TIMEOUT="0.5").stdout.split()[-2:])
        roomy_held, roomy_lost = map(int, home.script(QUEUE_BURST, RUNYARD_QUEUE_LIMIT="100000",
                                                      RUNYARD_FINISH_TIMEOUT="0.5").stdout.split()[-2:])
    assert held == 1000 and lost > 3000, (held, lost)
    assert roomy_lost == 0 and roomy_held == held + lost, (roomy_held, roomy_lost)


SETTING_CHECKS: dict[str, Callable[[Home], None]] = {
    "db": check_db, "artifacts": check_artifacts, "s3_endpoint": check_s3_endpoint, "server": check_server,
    "token": check_token, "ray": check_ray, "executor": check_executor, "node_server": check_node_server,
    "project": check_project, "slots": check_slots, "lease": check_lease, "fsync": check_fsync,
    "system_interval": check_system_interval, "finish_timeout": check_finish_timeout,
    "outputs_interval": check_outputs_interval, "output_limit": check_output_limit,
    "big_code_files": check_big_code_files,
    "queue_limit": check_queue_limit,
}


@pytest.mark.parametrize("key", sorted(SETTING_CHECKS))
def test_each_setting_changes_what_it_says(key: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = Home(tmp_path, monkeypatch)
    try:
        SETTING_CHECKS[key](home)
    finally:
        stop_agents(home.home)


# -- options of `runyard run` ----------------------------------------------------------------------

def statuses(store: Any, *numbers: int) -> list[str]:
    return [store.get_run(n).status.value for n in numbers]


def check_resources(home: Home, option: str, big: str, small: str, never: str, lacks: str) -> None:
    """On a machine of 2 cores and 4 GiB: ``big`` and ``small`` together do not fit, so ``small``
    waits for ``big`` even with slots free; ``never`` can never fit and fails at once."""
    with home.no_agent():
        first, second, third = home.queue(option, big), home.queue(option, small), home.queue(option, never)
    opened = home.store()
    try:
        scheduler, recorder = schedule(home, opened.store, slots=4)
        scheduler.tick()
        assert statuses(opened.store, first, second, third) == ["starting", "queued", "failed"]
        assert lacks in (opened.store.get_run(third).status_message or "")
        opened.store.update_run(first, _ended())
        scheduler.tick()
        assert [s.number for s in recorder.specs] == [first, second]
    finally:
        opened.close()


def check_cpus(home: Home) -> None:
    check_resources(home, "--cpus", "2", "1", "3", "asks for 3 CPU cores; docs-host has 2")


def check_memory(home: Home) -> None:
    check_resources(home, "--memory", "3G", "2G", "5G", "asks for 5.0 GiB of memory; docs-host has 4.0 GiB")


def check_gpus(home: Home) -> None:
    from runyard.exec.gpus import gpu_count

    wanted = str(gpu_count() + 1)
    refused = home.runyard("run", "--gpus", wanted, "--", sys.executable, "train.py", check=False)
    assert refused.exit_code == 2 and f"--gpus {wanted}: this machine" in refused.output
    opened = home.store()
    try:  # another machine serving the database has them: the run is queued, and docs-host leaves it
        opened.store.take_lease("agent:gpu-box", "gpu-box", 30, "gpu-box",
                                {"host": "gpu-box", "slots": 1, "gpus": int(wanted), "cpus": 2, "memory": GIB})
        with home.no_agent():
            number = home.queue("--gpus", wanted)
        schedule(home, opened.store)[0].tick()
        assert opened.store.get_run(number).status.value == "queued"
    finally:
        opened.close()


def started_in_order(home: Home, numbers: list[int]) -> list[int]:
    opened = home.store()
    try:
        scheduler, recorder = schedule(home, opened.store, slots=1)
        order = []
        for _ in numbers:
            scheduler.tick()
            order.append(recorder.specs[-1].number)
            opened.store.update_run(order[-1], _ended())
        return order
    finally:
        opened.close()


def check_priority(home: Home) -> None:
    with home.no_agent():
        low, high = home.queue(), home.queue("--priority", "5")
    assert started_in_order(home, [low, high]) == [high, low]


def check_machine(home: Home) -> None:
    (home.project / "runyard.toml").write_text(textwrap.dedent("""
        [machines.big]
        cpus = 2
        memory = "1G"
        timeout = "1h"
        priority = 7
    """))
    with home.no_agent():
        plain, profiled, overridden = home.queue(), home.queue("--machine", "big"), home.queue(
            "--machine", "big", "--priority", "1")
    opened = home.store()
    try:
        run = opened.store.get_run(profiled)
        assert (run.priority, run.resources["cpus"], run.resources["memory"]) == (7, 2, GIB)
        assert opened.store.get_run(overridden).priority == 1  # the flag wins over the profile
    finally:
        opened.close()
    assert started_in_order(home, [plain, profiled, overridden]) == [profiled, overridden, plain]


def spec_of(home: Home, *options: str) -> Any:
    with home.no_agent():
        home.queue(*options)
    opened = home.store()
    try:
        scheduler, recorder = schedule(home, opened.store)
        scheduler.tick()
        return recorder.specs[0]
    finally:
        opened.close()


def run_of(home: Home, *options: str) -> Any:
    with home.no_agent():
        number = home.queue(*options)
    opened = home.store()
    try:
        return opened.store.get_run(number)
    finally:
        opened.close()


def check_on(home: Home) -> None:
    assert run_of(home, "--on", "local").executor == "local"
    refused = home.runyard("run", "--on", "the-cloud", "--", "true", check=False)
    assert refused.exit_code == 2 and "--on the-cloud: no such executor" in refused.output, refused.output
    # A run sent to an executor this agent does not have is left queued for an agent that has it.
    from runyard.store.newrun import NewRun
    from runyard.types import RunStatus

    opened = home.store()
    try:
        elsewhere = opened.store.create_run(NewRun(project="p", status=RunStatus.QUEUED, executor="cluster",
                                                   command=["true"])).number
        scheduler, recorder = schedule(home, opened.store)
        scheduler.tick()
        assert elsewhere not in [s.number for s in recorder.specs]
        assert opened.store.get_run(elsewhere).status is RunStatus.QUEUED
    finally:
        opened.close()


def check_timeout(home: Home) -> None:
    assert spec_of(home, "--timeout", "90s").timeout == 90.0


def check_env(home: Home) -> None:
    assert spec_of(home, "--env", "COLOUR=blue").env["COLOUR"] == "blue"


def check_param(home: Home) -> None:
    spec = spec_of(home, "--param", "lr=0.1")
    assert spec.params == {"lr": "0.1"}


def check_pip(home: Home) -> None:
    assert spec_of(home, "--pip", "termcolor").pip == ["termcolor"]


def check_environment(home: Home) -> None:
    home.home.mkdir(parents=True, exist_ok=True)
    (home.home / "config.toml").write_text('[environments.plots]\npip = ["termcolor", "rich>=13"]\n')
    # The named set's packages, then --pip's; a --pip naming one of them wins.
    assert spec_of(home, "--environment", "plots", "--pip", "rich==13.7.1").pip == ["termcolor", "rich==13.7.1"]
    unknown = CliRunner().invoke(cli, ["run", "--environment", "nope", "--", "python", "train.py"], env=home.env)
    assert unknown.exit_code == 2 and "known: plots" in unknown.output


def check_requirements(home: Home) -> None:
    (home.project / "reqs.txt").write_text("termcolor\n")
    assert spec_of(home, "--requirements", "reqs.txt").requirements == "termcolor\n"


def check_mount(home: Home) -> None:
    (home.project / "data").mkdir()
    [mount] = spec_of(home, "--mount", "data:inputs").mounts
    assert (mount.kind, mount.target) == ("path", "inputs")


def check_name(home: Home) -> None:
    assert run_of(home, "--name", "wider").name == "wider"


def check_label(home: Home) -> None:
    assert run_of(home, "--label", "baseline").labels == ("baseline",)


def check_note(home: Home) -> None:
    assert run_of(home, "--note", "first try").notes == "first try"


def check_run_project(home: Home) -> None:
    assert run_of(home, "--project", "gan").project == "gan"


def check_json(home: Home) -> None:
    with home.no_agent():
        out = home.runyard("run", "--json", "--", "true").output
    assert json.loads(out.strip().splitlines()[-1])["status"] == "queued"


def check_follow(home: Home) -> None:
    """Following needs a run that ends: tests/flow/test_execution.py's test_ls_ps_label_note_and_follow
    runs `runyard run -f` and checks its log and exit code."""
    source = (Path(__file__).parents[1] / "flow" / "test_execution.py").read_text()
    assert 'def test_ls_ps_label_note_and_follow' in source and '"run", "-f"' in source


RUN_OPTION_CHECKS: dict[str, Callable[[Home], None]] = {
    "cpus": check_cpus, "memory": check_memory, "gpus": check_gpus, "priority": check_priority,
    "machine": check_machine, "timeout": check_timeout, "env": check_env, "params": check_param, "pip": check_pip,
    "requirements": check_requirements, "mounts": check_mount, "name": check_name, "labels": check_label,
    "note": check_note, "project": check_run_project, "as_json": check_json, "follow": check_follow,
    "on": check_on, "environment_profile": check_environment,
}


def test_every_setting_and_run_option_has_a_behaviour_check() -> None:
    assert sorted(SETTING_CHECKS) == sorted(s.key for s in SETTINGS)
    options = [p.name for p in cli.commands["run"].params if p.name != "command"]
    assert sorted(RUN_OPTION_CHECKS) == sorted(options)


@pytest.mark.parametrize("option", sorted(RUN_OPTION_CHECKS))
def test_each_run_option_changes_what_it_says(option: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = Home(tmp_path, monkeypatch)
    try:
        RUN_OPTION_CHECKS[option](home)
    finally:
        stop_agents(home.home)
