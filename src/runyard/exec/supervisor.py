"""The supervisor: one detached process per launched run, the same program whatever executes it.

    python -m runyard.exec.supervisor RUN_DIR/launch.json

It materialises the code snapshot into the run's own directory, builds or reuses the package
environment, copies the mounts in read-only, then starts the command in its own process group, in
the environment recorded from the shell that submitted it (``runyard.exec.environment``) with
``RUNYARD_RUN_ID`` set (so ``runyard.init()`` attaches). From then on it captures stdout and stderr
line by line (as the SDK's tee does: ``runyard.sdk.lines``), turns stdout lines that are JSON
objects of numbers into metrics, samples the hardware of the process tree, heartbeats, enforces the
timeout, stores the files the command writes (``outputs/`` and others) from a thread of its own
(``runyard.exec.outputs``) every few minutes and at the end, and records how the run ended. Every
record goes to the run's spool; output files go straight into the artifact store the code came
from. The supervisor never talks to the database or the network.

SIGTERM (``runyard stop``) is passed to the command's process group, followed by SIGKILL after a
grace period; while the run is still being prepared, it ends the package installer the same way.
If the supervisor itself is killed, the command dies with it (parent-death signal), and whoever
finds the supervisor's spool lock free kills what is left of the run's process groups (recorded in
the run's directory, see ``runyard.exec.groups``) and marks the run lost.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import os
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from runyard import redact
from runyard.exec import groups
from runyard.exec.environment import command_environment, describe, inherited
from runyard.exec.outputs import PARAMS_FILE, Outputs, written_by
from runyard.exec.spec import LaunchSpec, run_directory
from runyard.names import validate_metric_key
from runyard.sdk.lines import Lines, pump
from runyard.sdk.writer import Writer
from runyard.spool import records
from runyard.spool.rundir import TARGET_FILE, run_dir, target_key_of
from runyard.store.artifacts import ArtifactStore, open_artifacts
from runyard.types import RunKind

WORK = "work"
PID_FILE = "supervisor.pid"
#: A shell's exit codes for a command it did not find, and for one it could not execute.
NOT_FOUND = 127
NOT_EXECUTABLE = 126
#: The matplotlib backend of launched runs: plt.show() saves figures. runyard/exec/mplbackend.py,
#: copied into the run's directory under this name and put on PYTHONPATH, so that it loads in a
#: Python that has matplotlib but not runyard.
MPL_MODULE = "runyard_mplbackend"


class Supervisor:
    def __init__(self, spec: LaunchSpec, artifacts: Any = None) -> None:
        """``artifacts``: where code, mounts and outputs are read and kept; by default the home's
        store at ``spec.artifacts`` (a supervisor on a node is handed the server's, see exec/node.py)."""
        self.spec = spec
        self.home = Path(spec.home)
        self.directory = run_directory(self.home, spec.run_id)
        self.work = self.directory / WORK
        spool = run_dir(self.home / "spool", spec.run_id)
        spool.mkdir(parents=True, exist_ok=True)
        # The agent that ingests (or, for a server, ships) this spool is the one of its target.
        target = target_key_of(f"server {spec.server}", "") if spec.server else target_key_of(spec.db, spec.artifacts)
        (spool / TARGET_FILE).write_text(target)
        self.writer = Writer(spool, spec.run_id, f"sup{os.getpid()}", fsync=spec.fsync)
        # The home's store (a directory or S3), or a node's client.ServerBlobs: the part of the store
        # that placing code and mounts and keeping outputs use.
        self.artifacts: Any = artifacts if artifacts is not None else open_artifacts(
            spec.artifacts, s3_endpoint=spec.s3_endpoint, scratch=self.home / "tmp")
        self.outputs = Outputs(self.work, self.artifacts, self._record_output, self.system,
                               self._written_by_command, spec.output_limit)
        self.stop_requested = threading.Event()
        self.child: subprocess.Popen[bytes] | None = None
        self._json_step = 0
        #: The snapshot's big files placed as read-only hard links (see prepare).
        self.linked: set[str] = set()
        self._read_only_hint: str | None = None
        self._skipped_keys: set[str] = set()

    # -- records ----------------------------------------------------------------------------------

    def emit(self, kind: str, *fields: Any) -> None:
        self.writer.queue.append((records.UNNUMBERED, kind, time.time(), *fields))

    def system(self, text: str) -> None:
        # runyard's own lines name the command, the requirements and the installer's output: their
        # credentials are masked before they are recorded (the command itself gets the real ones).
        self.emit(records.LOG, "system", redact.text(text))

    def end(self, status: str, exit_code: int | None = None, message: str | None = None) -> None:
        event: dict[str, Any] = {"event": "end", "status": status}
        if exit_code is not None:
            event["exit_code"] = exit_code
        if message:
            event["message"] = redact.text(message)
        self.emit(records.EVENT, event)

    # -- preparing --------------------------------------------------------------------------------

    def prepare(self) -> dict[str, str]:
        """Materialise code and mounts, build the environment; returns the command's environment."""
        from runyard.exec.snapshot import materialise

        spec = self.spec
        artifacts = self.artifacts
        if self.work.exists():  # a previous attempt: mounts in it are read-only
            _remove_tree(self.work)
        self.work.mkdir(parents=True)
        # Big files are hard-linked from the store only where the command cannot write them (see
        # _parent_death_guard); a reflink or a copy otherwise.
        code = materialise(spec.snapshot_id, artifacts, self.work,
                           hard_links=spec.big_code_files == "link" and _read_only_holds())
        self.system(f"code: {len(code.files)} files from snapshot {spec.snapshot_id[:19]}... in {self.work}")
        if code.linked:
            self.linked = set(code.linked)
            named = ", ".join(sorted(code.linked)[:5]) + (", ..." if len(code.linked) > 5 else "")
            self.system(f"code: {len(code.linked)} big file(s) shared read-only with the artifact store, using no "
                        f"disk: {named}. The command can replace them (write a new file, then rename it) but "
                        "not write into them; setting big_code_files = \"copy\" gives each run its own copy")
        self.outputs.snapshot(code.files)
        (self.work / PARAMS_FILE).write_text(json.dumps(spec.params, indent=1, sort_keys=True))
        for mount in spec.mounts:
            self._mount(mount, artifacts)
            self.outputs.place(mount.target)
        from runyard.notebook.connection import LAB_IP

        environment = spec.environment
        if environment is None:
            environment = inherited(os.environ)
            self.system("this run was queued by an older runyard, which did not record the submitting shell's "
                        "environment: it runs with the agent's PATH")
        if spec.server:
            # On a node: the SDK of the command ships to the server, with the node's token; the
            # GPUs are those the executor gave this process.
            # GPUs are those the executor gave this process; a JupyterLab answers on the node's
            # address the node's job chose (exec/node.py).
            where = {"RUNYARD_SERVER": spec.server, "RUNYARD_TOKEN": os.environ.get("RUNYARD_TOKEN", ""),
                     "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
                     LAB_IP: os.environ.get(LAB_IP, "")}
        else:
            # Set here, after --env: a run's own variables never move its JupyterLab off loopback.
            where = {"RUNYARD_DB": spec.db, "RUNYARD_ARTIFACTS": spec.artifacts,
                     "RUNYARD_S3_ENDPOINT": spec.s3_endpoint or "",
                     "CUDA_VISIBLE_DEVICES": ",".join(str(g) for g in spec.gpus), LAB_IP: ""}
        env = command_environment(environment, spec.env, {
            **{f"RUNYARD_PARAM_{k}": v for k, v in spec.params.items()},
            "RUNYARD_RUN_ID": spec.run_id, "RUNYARD_CAPTURED": "1", "RUNYARD_HOME": spec.home,
            "RUNYARD_FSYNC": spec.fsync, "RUNYARD_SYSTEM_INTERVAL": f"{spec.system_interval:g}",
            "PYTHONUNBUFFERED": "1", **where,
        })
        if "MPLBACKEND" not in spec.env:  # plt.show() saves figures (harmless without matplotlib)
            env.update(self._matplotlib_backend(env))
        if spec.pip or spec.requirements:
            from runyard.exec.venvs import ensure_env

            python, site_packages = self._base_python(env)
            # The installer in a group of its own that a stop request ends (raising groups.Stopped).
            runner = functools.partial(groups.run_step, directory=self.directory, stop=self.stop_requested,
                                       grace=spec.grace)
            venv, _ = ensure_env(self.home, spec.pip, spec.requirements, python, site_packages, self.system,
                                 runner)
            env["VIRTUAL_ENV"] = str(venv)
            env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env['PATH']}"
        return env

    def _matplotlib_backend(self, env: dict[str, str]) -> dict[str, str]:
        """MPLBACKEND and PYTHONPATH for runyard's matplotlib backend, copied beside the work directory."""
        directory = self.directory / "python"
        directory.mkdir(exist_ok=True)
        shutil.copyfile(Path(__file__).with_name("mplbackend.py"), directory / f"{MPL_MODULE}.py")
        path = os.pathsep.join(p for p in (env.get("PYTHONPATH"), str(directory)) if p)
        return {"MPLBACKEND": f"module://{MPL_MODULE}", "PYTHONPATH": path}

    def _base_python(self, env: dict[str, str]) -> tuple[str, list[str]]:
        """The Python the command would find, and its site directories: a --pip environment is built
        with it and layered over it, so the run keeps the packages of the submitter's environment."""
        from runyard.exec.venvs import SITE_QUERY

        found = shutil.which("python3", path=env["PATH"]) or shutil.which("python", path=env["PATH"])
        if found:
            try:
                answer = subprocess.run([found, "-c", SITE_QUERY], env=env, capture_output=True, text=True,
                                        timeout=60, check=True, stdin=subprocess.DEVNULL)
                return found, [str(d) for d in json.loads(answer.stdout)]
            except (OSError, subprocess.SubprocessError, ValueError):
                pass  # not a Python that answers: the one that submitted the run will do
        return self.spec.python, list(self.spec.site_packages)

    def _mount(self, mount: Any, artifacts: ArtifactStore) -> None:
        target = self.work / mount.target
        if target.exists() or target.is_symlink():  # the snapshot's: the mount takes its place, and says so
            directory = target.is_dir() and not target.is_symlink()
            if directory:
                _remove_tree(target)
            else:
                target.unlink()
            self.system(f"the mount at {mount.target} replaces the {'directory' if directory else 'file'} of that "
                        "name in the code snapshot, for this run")
        if mount.kind == "artifact":
            placed = []
            for path, sha in mount.files:
                rel = path[len(mount.source):].lstrip("/") if mount.source else path
                artifacts.export(f"sha256:{sha}", target if rel else target.parent,
                                 rel or target.name)
                placed.append((rel, sha))
            sha = mount.files[0][1] if len(mount.files) == 1 else _tree_digest(placed)
            self.emit(records.INPUT, "artifact", sha, mount.run, mount.source, mount.target)
            self.system(f"mounted {len(mount.files)} file(s) of run {mount.run}:{mount.source} at {mount.target}")
        else:
            source = Path(mount.source)
            if not source.exists():
                raise FileNotFoundError(f"mount source {source} no longer exists")
            sha = _copy_read_only(source, target)
            self.emit(records.INPUT, "path", sha, None, str(source), mount.target)
            self.system(f"mounted {source} at {mount.target} (read-only, sha256 {sha[:12]})")
        _read_only(target)

    # -- running ----------------------------------------------------------------------------------

    def run(self) -> int:
        spec = self.spec
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / PID_FILE).write_text(f"{os.getpid()}\n")
        self.writer.start()
        self.emit(records.EVENT, {"event": "start", "attach": False, "executor": self.spec.executor,
                                  "host": socket.gethostname(),
                                  "environment": {"supervisor_pid": os.getpid(), "gpus": spec.gpus}})
        signal.signal(signal.SIGTERM, lambda *_: self.stop_requested.set())
        signal.signal(signal.SIGINT, lambda *_: self.stop_requested.set())
        try:
            env = self.prepare()
        except groups.Stopped as e:
            self.system(f"{e}; the run did not start")
            self.end("stopped", message=f"{e} (preparing the run)")
            self.writer.close(30)
            return 0
        except Exception as e:  # noqa: BLE001 - any failure to prepare ends the run, explained
            self.system(f"could not start: {e}")
            self.end("failed", message=f"could not start: {e}")
            self.writer.close(30)
            return 1
        if self.stop_requested.is_set():
            self.end("stopped", message="stopped before it started")
            self.writer.close(30)
            return 0
        status, code, message = self._execute(env)
        self.outputs.finish()
        self.end(status, code, message)
        self.writer.close(60)
        return 0

    def _execute(self, env: dict[str, str]) -> tuple[str, int | None, str | None]:
        spec = self.spec
        argv = ["sh", "-c", spec.argv[0]] if spec.shell else list(spec.argv)
        resolved, refusal = self._find(argv[0], env["PATH"])
        if refusal is not None:
            # As a shell says it, and with its exit code (127 not found, 126 not executable): found
            # here, before the parent-death guard would say it in its own words.
            code, message, detail = refusal
            self.system(f"{message} ({detail})")
            return "failed", code, message
        self.system(f"command: {shlex.join(redact.argv([resolved or argv[0], *argv[1:]]))} ({describe(env)})")
        outcome_file = self._notebook_outcome(env)
        argv = [*_parent_death_guard(), resolved or argv[0], *argv[1:]]
        try:
            child = subprocess.Popen(argv, cwd=self.work, env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        except OSError as e:
            self.system(f"could not start {spec.argv[0]!r}: {e.strerror}")
            return "failed", None, f"could not start the command: {e.strerror}"
        self.child = child
        # Recorded for whoever finds this supervisor dead: the command's children outlive the
        # parent-death signal, which reaches only the command itself (see runyard.exec.groups).
        groups.record(self.directory, child.pid)
        readers = [threading.Thread(target=self._read, args=(child.stdout, "stdout"), daemon=True),
                   threading.Thread(target=self._read, args=(child.stderr, "stderr"), daemon=True)]
        for reader in readers:
            reader.start()
        sampler = None
        if spec.system_interval > 0:
            from runyard.sdk.sampler import Sampler

            sampler = Sampler(spec.system_interval, self.writer.queue.extend, child.pid)
            sampler.start()
        deadline = time.monotonic() + spec.timeout if spec.timeout else math.inf
        self.outputs.start(max(spec.outputs_interval, 0.05))
        outcome: tuple[str, str | None] | None = None
        # Nothing in this loop may take long: a stop or a timeout is acted on within 50 ms.
        while child.poll() is None:
            if self.stop_requested.is_set() and outcome is None:
                outcome = ("stopped", "stopped on request")
                self._terminate(child)
            elif time.monotonic() > deadline and outcome is None:
                outcome = ("timeout", f"ended by its timeout of {spec.timeout:g} s")
                self.system(f"timeout: {spec.timeout:g} s passed; stopping the command")
                self._terminate(child)
            time.sleep(0.05)
        for reader in readers:
            reader.join(timeout=5)
        if sampler is not None:
            sampler.stop()
        code = child.returncode
        if outcome is None and self.stop_requested.is_set():
            # Stopped by whoever stopped this supervisor too (a cluster ending a job signals every
            # process of it at once): the command died of the same request before this loop saw it.
            outcome = ("stopped", "stopped on request")
        if outcome is not None:
            return outcome[0], code, outcome[1]
        if outcome_file is not None:
            return _notebook_ended(code, outcome_file)
        if code == 0:
            return "finished", 0, None
        if code < 0:
            return "failed", code, f"killed by signal {signal.Signals(-code).name}"
        if code == NOT_FOUND and spec.shell:
            return "failed", code, f"exited with code {code}: the shell found no such command (see the log)"
        if self._read_only_hint is not None:
            return "failed", code, f"exited with code {code}; {self._read_only_hint}"
        return "failed", code, f"exited with code {code}"

    def _notebook_outcome(self, env: dict[str, str]) -> Path | None:
        """For a notebook run: the file its executor says how it ended in (named in ``env``)."""
        if self.spec.kind != RunKind.NOTEBOOK.value:
            return None
        from runyard.notebook.execute import OUTCOME_ENV

        path = self.directory / "notebook-outcome.json"
        path.unlink(missing_ok=True)  # a previous attempt's
        env[OUTCOME_ENV] = str(path)
        return path

    def _find(self, program: str, path: str) -> tuple[str | None, tuple[int, str, str] | None]:
        """The program to run, or why it cannot: (exit code, message, detail), as a shell would say it."""
        if "/" not in program:
            # Looked up on the run's PATH (the submitting shell's), not the supervisor's.
            resolved = shutil.which(program, path=path)
            if resolved is None:
                return None, (NOT_FOUND, f"command not found: {program}",
                              f"not on the run's PATH, {path}: the PATH of the shell that submitted it, unless "
                              "--env PATH=... gave another")
            return resolved, None
        target = self.work / program  # a relative path names a file of the snapshot
        if not target.exists():
            return None, (NOT_FOUND, f"command not found: {program}", "no such file")
        if target.is_dir() or not os.access(target, os.X_OK):
            return None, (NOT_EXECUTABLE, f"permission denied: {program}", "not an executable file")
        return None, None

    def _terminate(self, child: subprocess.Popen[bytes]) -> None:
        """SIGTERM to the process group; SIGKILL after the grace period (in the background)."""
        try:
            os.killpg(child.pid, signal.SIGTERM)
        except ProcessLookupError:
            return

        def escalate() -> None:
            try:
                child.wait(self.spec.grace)
            except subprocess.TimeoutExpired:
                self.system(f"still running {self.spec.grace:g} s after SIGTERM; sending SIGKILL")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGKILL)

        threading.Thread(target=escalate, daemon=True).start()

    def _read(self, stream: IO[bytes] | None, name: str) -> None:
        """Capture one pipe line by line, as the SDK's tee does (see ``runyard.sdk.lines``)."""
        assert stream is not None
        append = self.writer.queue.append

        def line(now: float, text: str) -> None:
            if name == "stdout" and text.startswith("{"):
                self._maybe_metrics(text, now)
            append((records.UNNUMBERED, records.LOG, now, name, text))
            if self.linked and self._read_only_hint is None and "ermission denied" in text:
                self._explain_denied(text)

        pump(stream, Lines(line))

    def _explain_denied(self, text: str) -> None:
        """The command was refused writing into one of the code's shared big files: say why, once."""
        named = [rel for rel in self.linked if rel in text or rel.rsplit("/", 1)[-1] in text]
        if not named:
            return
        self._read_only_hint = (f"{named[0]} is a snapshot file shared read-only with the artifact store; write a "
                                "new file and rename it over the old one, or set big_code_files = \"copy\"")
        self.system(f"permission denied on {named[0]}: {self._read_only_hint}")

    def _maybe_metrics(self, line: str, now: float) -> None:
        """A stdout line that is a JSON object is also a metrics record of its numbers (no SDK needed).

        Other values (strings such as {"phase": "eval"}, booleans, lists, null) and keys that are not
        metric names are left out, and the run's log says so once per key, so a script that mixes
        them keeps its numbers and its author learns why the rest is missing.
        """
        try:
            data = json.loads(line)
        except ValueError:
            return
        if not isinstance(data, dict) or not data:
            return
        values: dict[str, Any] = {}
        for key, value in data.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                self._skipped(key, f"its value is {_kind_of(value)}, not a number")
                continue
            try:
                validate_metric_key(key)
            except ValueError as e:
                self._skipped(key, str(e))
                continue
            values[key] = float(value)
        if not values:
            return
        step_value = values.pop("step", None)
        step = int(step_value) if step_value is not None and float(step_value).is_integer() else self._json_step
        self._json_step = step + 1
        if values:
            self.writer.queue.extend((values, records.UNNUMBERED, now, step))

    def _skipped(self, key: str, why: str) -> None:
        """Say once per run and key that a JSON line's key is not recorded as a metric."""
        if key in self._skipped_keys:
            return
        self._skipped_keys.add(key)
        self.system(f"JSON lines on stdout: key {key!r} is not recorded as a metric: {why} "
                    "(only numbers become metrics; said once per key)")

    def _record_output(self, path: str, size: int, sha: str, mode: int) -> None:
        self.emit(records.ARTIFACT, path, size, sha, f"sha256:{sha}", mode)

    def _written_by_command(self) -> set[str]:
        child = self.child
        return written_by(child.pid) if child is not None and child.poll() is None else set()


def _notebook_ended(code: int, outcome_file: Path) -> tuple[str, int | None, str | None]:
    """How a notebook run ended, in its executor's words: the cell and its exception, a dead kernel
    (told apart, as papermill's exit code 138 does), or an interrupt in the kernel (stopped)."""
    from runyard.notebook.execute import STOPPED, outcome_of

    said = outcome_of(outcome_file)
    if code == 0:
        return "finished", 0, said
    if code < 0:
        return "failed", code, f"the notebook executor was killed by signal {signal.Signals(-code).name}"
    if said is None:
        return "failed", code, (f"exited with code {code} before executing the notebook: see the log (the run's "
                                "python needs runyard[notebook]: runyard, ipykernel and papermill)")
    return ("stopped" if code == STOPPED else "failed"), code, said


def _kind_of(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object" if isinstance(value, dict) else type(value).__name__


def _parent_death_guard() -> list[str]:
    """A prefix that makes the command die if the supervisor dies (Linux parent-death signal).

    Run as root, the command also loses CAP_DAC_OVERRIDE, so read-only files stay read-only for it
    as for anyone else: the code's big files are hard links to the artifact store's objects, and the
    mounts are read-only copies."""
    prefix = groups.pdeathsig_prefix()
    if prefix and os.geteuid() == 0 and _can_drop_capabilities():
        return [*prefix[:-1], "--bounding-set", "-dac_override", "--"]
    return prefix


def _can_drop_capabilities() -> bool:
    """Whether this process may drop capabilities from its children's bounding set (CAP_SETPCAP)."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return False
    for line in status.splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) & (1 << 8))
    return False


def _read_only_holds() -> bool:
    """Whether a read-only file is read-only for the command: it does not run as root, or it runs
    without CAP_DAC_OVERRIDE (see _parent_death_guard)."""
    if os.geteuid() != 0:
        return True
    return bool(shutil.which("setpriv")) and sys.platform.startswith("linux") and _can_drop_capabilities()


def _copy_read_only(source: Path, target: Path) -> str:
    """Copy a file or a tree; returns a sha256 naming its content (the file's, or the tree's)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_file():
        shutil.copyfile(source, target)
        return hashlib.sha256(target.read_bytes()).hexdigest()
    shutil.copytree(source, target, symlinks=False)
    return _tree_digest([(path.relative_to(target).as_posix(), hashlib.sha256(path.read_bytes()).hexdigest())
                         for path in sorted(target.rglob("*")) if path.is_file()])


def _tree_digest(files: list[tuple[str, str]]) -> str:
    """One sha256 naming a set of (relative path, sha256) files: a mounted directory's identity."""
    digest = hashlib.sha256()
    for rel, sha in sorted(files):
        digest.update(f"{rel}\0{sha}\n".encode())
    return digest.hexdigest()


def _remove_tree(path: Path) -> None:
    for item in [path, *path.rglob("*")]:
        if item.is_dir() and not item.is_symlink():
            item.chmod(0o700)
    shutil.rmtree(path)


def _read_only(target: Path) -> None:
    paths = [target, *target.rglob("*")] if target.is_dir() else [target]
    for path in reversed(paths):
        mode = path.stat().st_mode
        path.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: python -m runyard.exec.supervisor RUN_DIR/launch.json", file=sys.stderr)
        return 2
    spec = LaunchSpec.from_json(Path(sys.argv[1]).read_text())
    return Supervisor(spec).run()


if __name__ == "__main__":
    raise SystemExit(main())
