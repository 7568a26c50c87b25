"""Submitting a run: snapshot the code, queue the run, make sure the agent will start it.

Used by ``runyard run`` and ``runyard rerun``. For a SQLite home this touches the database through
the standard library (``store/lite.py``) so that the command returns in a fraction of a second.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runyard.config import Settings
from runyard.errors import InvalidArgument, NotFound
from runyard.exec import options, template
from runyard.exec.environment import inherited
from runyard.exec.gpus import refuse_unavailable
from runyard.exec.spec import Mount
from runyard.exec.venvs import site_directories
from runyard.names import validate_label, validate_run_name
from runyard.store.newrun import NewRun
from runyard.types import RunKind, RunStatus

if TYPE_CHECKING:
    from runyard.store.artifacts import ArtifactStore


@dataclass
class Submission:
    command: list[str]
    shell: bool
    cwd: Path
    project: str | None = None
    name: str | None = None
    labels: Sequence[str] = ()
    note: str = ""
    params: dict[str, str] = field(default_factory=dict)
    pip: Sequence[str] = ()
    requirements: Path | None = None
    mounts: Sequence[str] = ()
    env: dict[str, str] = field(default_factory=dict)
    #: What the run inherits (``runyard.exec.environment.inherited``); None: this process's.
    environment: dict[str, str] | None = None
    gpus: int | None = None
    cpus: int | None = None
    memory: str | None = None
    timeout: str | None = None
    priority: int = 0
    machine: str | None = None
    #: A named package set (``[environments.NAME]``) installed with ``pip``; ``pip`` wins for a package both name.
    environment_profile: str | None = None
    #: Where the run executes (``--on``; a rerun: its parent's); None: the ``executor`` setting.
    executor: str | None = None
    parent: int | None = None
    #: A rerun reuses its parent's snapshot and launch options instead of taking new ones.
    snapshot: tuple[str, str | None, str | None, str | None] | None = None
    launch: dict[str, Any] | None = None
    resources: dict[str, Any] | None = None
    #: What the run executes: a notebook's command is the notebook executor (``notebook_command``).
    kind: RunKind = RunKind.SCRIPT


#: The module a notebook run's command runs, with the run's Python (see runyard.notebook.execute).
NOTEBOOK_EXECUTOR = "runyard.notebook.execute"


def notebook_command(notebook: str) -> list[str]:
    """The command of a notebook run: the executor, started by the ``python`` the run's PATH finds
    (a --pip environment's when it has one), so the kernel runs in the run's own Python."""
    return ["python", "-m", NOTEBOOK_EXECUTOR, notebook]


@dataclass(frozen=True)
class Submitted:
    number: int
    run_id: str
    files: int
    new_bytes: int
    #: What the submitter should know that does not stop the run (said on stderr by the CLI).
    warnings: tuple[str, ...] = ()


def launch_options(sub: Submission, settings: Settings) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(launch, resources, config) of a submission, every value checked."""
    if not sub.command or not all(sub.command):
        raise InvalidArgument("no command: give one after --, e.g. runyard run -- python train.py")
    if any("\x00" in part for part in sub.command):
        raise InvalidArgument("the command contains a NUL byte")
    profile: dict[str, Any] = {}
    if sub.machine is not None:
        if sub.machine not in settings.machines:
            known = ", ".join(sorted(settings.machines)) or "none are configured"
            raise InvalidArgument(f"--machine {sub.machine!r}: no such profile ([machines.NAME] in runyard.toml); "
                                  f"known: {known}")
        profile = dict(settings.machines[sub.machine])
    gpus = options.count(sub.gpus if sub.gpus is not None else profile.get("gpus"), "--gpus")
    cpus = options.count(sub.cpus if sub.cpus is not None else profile.get("cpus"), "--cpus")
    memory_text = sub.memory if sub.memory is not None else profile.get("memory")
    timeout_text = sub.timeout if sub.timeout is not None else profile.get("timeout")
    resources: dict[str, Any] = {"gpus": gpus or 0}
    if cpus:
        resources["cpus"] = cpus
    if memory_text is not None:
        resources["memory"] = options.size(str(memory_text))
    if sub.machine is not None:
        resources["machine"] = sub.machine
    timeout = options.duration(str(timeout_text)) if timeout_text is not None else None
    requirements = None
    if sub.requirements is not None:
        try:
            requirements = sub.requirements.read_text()
        except OSError as e:
            raise InvalidArgument(f"--requirements {sub.requirements}: cannot read it ({e.strerror})") from None
        options.requirement_lines(requirements, f"--requirements {sub.requirements}")
    mounts = [asdict(m) for m in _mounts(sub, settings)]
    pip = with_environment([options.pip_spec(p) for p in sub.pip], sub.environment_profile, settings)
    argv = template.substitute(sub.command, sub.shell, sub.params)
    if not argv:
        raise InvalidArgument("no command once {params} is expanded (no --param given): name the program first, "
                              "e.g. runyard run --param lr=0.1 -- python train.py {params}")
    launch = {
        # The command as typed is kept, so that a rerun with other params substitutes them again.
        "argv": argv, "template": list(sub.command), "shell": sub.shell, "env": dict(sub.env),
        "params": dict(sub.params),
        "pip": pip, "requirements": requirements,
        "site_packages": site_directories(),
        "python": sys.executable, "mounts": mounts, "timeout": timeout,
        "environment": sub.environment if sub.environment is not None else inherited(os.environ),
    }
    if sub.environment_profile is not None:
        launch["environment_profile"] = sub.environment_profile
    return launch, resources, _config(sub.kind, sub.params)


#: What a jupyterlab run's Python runs (``runyard notebook``).
LAB_COMMAND = ("-m", "runyard.notebook.labrun")


def _config(kind: RunKind, params: dict[str, str]) -> dict[str, Any]:
    """The run's config: its params as the command sees them (a notebook: as Python literals)."""
    if kind is RunKind.NOTEBOOK:
        from runyard.notebook.params import values_of

        return values_of(params)
    return {key: options.param_value(value) for key, value in params.items()}


def with_environment(pip: list[str], name: str | None, settings: Settings) -> list[str]:
    """``--pip`` requirements (checked) with those of the named environment ``[environments.NAME]``
    before them, less the packages ``--pip`` names itself."""
    if name is None:
        return pip
    if name not in settings.environments:
        known = ", ".join(sorted(settings.environments)) or "none are configured"
        raise InvalidArgument(f"--environment {name!r}: no such environment ([environments.NAME] in runyard.toml); "
                              f"known: {known}")
    given = {options.pip_name(p) for p in pip}
    where = f"[environments.{name}] pip"
    return [spec for spec in (options.requirement(p, where, urls=False) for p in settings.environments[name])
            if options.pip_name(spec) not in given] + pip


def _without(requirements: str, names: set[str]) -> str | None:
    """A requirements file's text without the lines naming any of ``names`` (None if nothing is left)."""
    kept = [line for line in requirements.replace("\\\n", "").splitlines()
            if not (options.uncommented(line) and options.pip_name(options.uncommented(line)) in names)]
    return "\n".join(kept) + "\n" if any(options.uncommented(line) for line in kept) else None


def _override(launch: dict[str, Any], resources: dict[str, Any], sub: Submission, settings: Settings) -> None:
    """A rerun's --pip, --env, --timeout, --mount and --gpus over its parent's, each checked as
    ``runyard run`` checks it: a package replaces the parent's requirement of the same package, a
    variable the parent's of the same name, a mount the parent's at the same target."""
    if sub.pip:
        new = [options.pip_spec(p) for p in sub.pip]
        replaced = {options.pip_name(p) for p in new}
        launch["pip"] = [p for p in launch.get("pip") or [] if options.pip_name(p) not in replaced] + new
        if launch.get("requirements"):  # the parent's requirements file may name the same packages
            launch["requirements"] = _without(launch["requirements"], replaced)
    if sub.env:
        launch["env"] = {**(launch.get("env") or {}), **sub.env}
    if sub.timeout is not None:
        launch["timeout"] = options.duration(sub.timeout)
    if sub.mounts:
        mounts = [asdict(m) for m in _mounts(sub, settings)]
        targets = {m["target"] for m in mounts}
        launch["mounts"] = [m for m in launch.get("mounts") or [] if m["target"] not in targets] + mounts
    if sub.gpus is not None:
        resources["gpus"] = options.count(sub.gpus, "--gpus")


def _mounts(sub: Submission, settings: Settings) -> list[Mount]:
    out: list[Mount] = []
    targets: set[str] = set()
    for text in sub.mounts:
        source, target = options.mount(text)
        if target in targets:
            raise InvalidArgument(f"--mount {text!r}: two mounts share the target {target!r}")
        targets.add(target)
        local = (sub.cwd / source).expanduser()
        if local.exists():
            out.append(Mount("path", target, str(local.resolve())))
            continue
        run_ref, sep, path = source.partition(":")
        if not sep:
            raise InvalidArgument(f"--mount {text!r}: {source} does not exist (and is not RUN:PATH)")
        out.append(_artifact_mount(settings, run_ref, path.strip("/"), target, text))
    return out


def _artifact_mount(settings: Settings, run_ref: str, path: str, target: str, text: str) -> Mount:
    from runyard.store.home import open_store

    opened = open_store(settings)
    try:
        run = opened.store.get_run(run_ref)
        entries = opened.store.list_artifacts(run.number)
        files = [(a.path, a.sha256) for a in entries if not path or a.path == path or a.path.startswith(path + "/")]
        if not files:
            raise NotFound(f"--mount {text!r}: run {run.number} has no artifact at {path or '/'}")
        return Mount("artifact", target, path, run.number, files)
    finally:
        opened.close()


def submit(settings: Settings, sub: Submission, progress: Callable[[int, int], None] | None = None) -> Submitted:
    """Queue ``sub``: its snapshot taken and stored (``progress`` told of the bytes stored, of how
    many, as new files go in), every option checked."""
    if sub.name is not None:
        validate_run_name(sub.name)
    labels = [validate_label(x) for x in sub.labels]
    if sub.launch is not None:
        launch = dict(sub.launch)
        launch["params"] = {**launch.get("params", {}), **sub.params}
        if "template" in launch:  # a parent queued before templates were kept runs its argv as it was
            launch["argv"] = template.substitute(launch["template"], bool(launch.get("shell")), launch["params"])
        if launch.get("environment") is None:  # a parent queued before runs recorded it: the rerunner's
            launch["environment"] = sub.environment if sub.environment is not None else inherited(os.environ)
        resources: dict[str, Any] = dict(sub.resources or {})
        _override(launch, resources, sub, settings)
        # What the parent asks pip for is checked again: it may have been queued before these checks.
        launch["pip"] = [options.pip_spec(p) for p in launch.get("pip") or []]
        options.requirement_lines(launch.get("requirements") or "", "--requirements (the parent's)")
        config = _config(sub.kind, launch["params"])
    else:
        launch, resources, config = launch_options(sub, settings)
        if settings.project_file is not None:
            # The project's [[alerts]] travel with the run; a malformed one stops the submission here.
            from runyard.alerts.rules import load_file, load_notify, travelling

            launch["alerts"] = [travelling(r) for r in load_file(settings.project_file)]
            notify = load_notify(settings.project_file)
            if notify is not None:
                launch["notify"] = notify
    # Settings of how the run keeps files are the submitter's (a project's runyard.toml, this shell),
    # as of now: recorded with the run, not taken from whichever agent later starts it.
    launch["output_limit"] = settings.output_limit
    launch["big_code_files"] = settings.big_code_files
    executor = _executor_of(sub, settings)
    if executor == "local":  # a cluster's scheduler fails at once a run no machine of it can take
        asked_by = "--gpus" if sub.gpus is not None or sub.machine is None else f"[machines.{sub.machine}] gpus"
        refuse_unavailable(settings, int(resources.get("gpus") or 0), asked_by)
    from runyard.store.artifacts import artifacts_of

    artifacts = artifacts_of(settings)
    settings.home.mkdir(parents=True, exist_ok=True)
    artifacts.ensure()
    files = new = 0
    root = None  # where the snapshot was taken, when this submission takes it
    if sub.snapshot is not None:
        snapshot_id, commit, branch, diff_ref = sub.snapshot
    else:
        from runyard.exec.snapshot import take

        snap = take(sub.cwd, artifacts, settings.home / "snapshot-cache.json", progress)
        snapshot_id, commit, branch, diff_ref = snap.id, snap.git_commit, snap.git_branch, snap.git_diff_ref
        files, new, root = snap.files, snap.new_bytes, snap.root
    if sub.kind is RunKind.NOTEBOOK:
        warnings = _place_notebook(launch, snapshot_id, artifacts, sub.cwd, root)
    elif sub.kind is RunKind.JUPYTERLAB:
        if launch["argv"][1:] != list(LAB_COMMAND):
            raise InvalidArgument("a jupyterlab run's command is python -m runyard.notebook.labrun: start one "
                                  "with runyard notebook")
        warnings = ()
    elif sub.kind is RunKind.SERVE:
        from runyard.exec.serving import SERVE_MODULE

        if launch["argv"][1:3] != ["-m", SERVE_MODULE]:
            raise InvalidArgument("a serve run's command is python -m runyard.serve.main: start one with runyard serve")
        warnings = ()
    else:
        warnings = _check_script(launch, snapshot_id, artifacts, sub.cwd, root)
    from runyard import redact

    # What readers see of the command is recorded with its credentials masked; the launch record
    # keeps the real argv, which only the supervisor (and a rerun) reads (see runyard.redact).
    command = redact.argv(["sh", "-c", launch["argv"][0]] if launch["shell"] else list(launch["argv"]))
    new_run = NewRun(
        project=sub.project or settings.project, status=RunStatus.QUEUED, name=sub.name, command=command,
        config=config, labels=labels, notes=sub.note, resources=resources or {"gpus": 0},
        priority=sub.priority, executor=executor, parent=sub.parent, snapshot_id=snapshot_id,
        git_commit=commit, git_branch=branch, git_diff_ref=diff_ref, launch=launch, kind=sub.kind,
    )
    number, run_id = _enqueue(settings, new_run)
    from runyard.sdk.agent_launch import ensure_agent

    ensure_agent(settings)
    return Submitted(number, run_id, files, new, warnings)


def _executor_of(sub: Submission, settings: Settings) -> str:
    from runyard.exec import executors

    if sub.executor is not None:
        return executors.check(sub.executor)
    return executors.check(settings.executor, "the executor setting")


def _check_script(launch: dict[str, Any], snapshot_id: str, artifacts: ArtifactStore, cwd: Path,
                  root: Path | None) -> tuple[str, ...]:
    """``python FILE`` whose FILE the snapshot lacks would fail once started: refuse it now. An
    absolute FILE outside the snapshot runs as it is when the run starts: a warning says so."""
    from runyard.exec.commands import script_of, words_of

    words = words_of(launch["argv"], bool(launch["shell"]))
    script = script_of(words) if words else None
    if script is None:
        return ()
    if script.startswith("/"):
        if root is None:
            return ()
        real = Path(script).resolve()
        if real.is_relative_to(root.resolve()):
            return (f"{script} names the file in your project, not the run's copy of it: the run reads it as it "
                    f"is when the run starts, not as it is now; name it from the project's root "
                    f"({real.relative_to(root.resolve()).as_posix()}) to run the snapshot",)
        return (f"{script} is outside the snapshot of {root}: the run reads it as it is when the run starts, "
                "not as it is now (put it in the project to run it as it is now)",)
    from runyard.exec.snapshot import manifest_of

    files = manifest_of(snapshot_id, artifacts)
    if script in files or any(path.startswith(script + "/") for path in files):
        return ()
    where = f"the snapshot of {root}" if root is not None else "the run's snapshot"
    hint = "check the name"
    on_disk = cwd / script
    if root is not None and on_disk.exists():
        inside = on_disk.resolve().is_relative_to(root) and on_disk.resolve() != root
        if inside and cwd.resolve() != root and (on_disk.resolve().relative_to(root).as_posix() in files):
            hint = (f"a run starts at the snapshot's root, not in {cwd}: name the script from there, "
                    f"{on_disk.resolve().relative_to(root).as_posix()}")
        elif inside:
            hint = "it exists here but is not in the snapshot: ignored by .gitignore or .runyardignore?"
        else:
            hint = f"it is outside {root}, which is what the run gets"
    raise InvalidArgument(f"{script}: no such file in {where}, where the run starts; {hint}")


def notebook_from_root(notebook: str, cwd: Path, root: Path | None) -> str:
    """A notebook named from ``cwd``, named from the snapshot's ``root`` (where the run starts)."""
    if root is not None and not notebook.startswith("/"):
        real = (cwd / notebook).resolve()
        if real.is_relative_to(root.resolve()):
            return real.relative_to(root.resolve()).as_posix()
    return notebook


def _place_notebook(launch: dict[str, Any], snapshot_id: str, artifacts: ArtifactStore, cwd: Path,
                    root: Path | None) -> tuple[str, ...]:
    """A notebook named from ``cwd`` is named from the snapshot's root, where the run starts (the
    command rewritten so); one the snapshot lacks is refused now rather than failing once started.
    A notebook run's command is the executor's and nothing else (a server checks what clients send)."""
    from runyard.exec.snapshot import manifest_of

    argv = list(launch["argv"])
    if launch.get("shell") or len(argv) != 4 or argv[:3] != notebook_command("")[:3]:
        raise InvalidArgument(f"a notebook run's command is {' '.join(notebook_command('NOTEBOOK'))}, not "
                              f"{' '.join(argv)}")
    notebook = notebook_from_root(argv[-1], cwd, root)
    if notebook != argv[-1]:
        launch["argv"] = launch["template"] = notebook_command(notebook)
    if notebook.startswith("/") or not notebook.endswith(".ipynb"):
        raise InvalidArgument(f"{notebook}: a notebook run executes a .ipynb file of the project (its snapshot); "
                              "put the notebook in the project and name it from there")
    if notebook not in manifest_of(snapshot_id, artifacts):
        where = f"the snapshot of {root}" if root is not None else "the run's snapshot"
        hint = "ignored by .gitignore or .runyardignore?" if (cwd / argv[-1]).exists() else "check the name"
        raise InvalidArgument(f"{notebook}: no such notebook in {where}; {hint}")
    return ()


def _enqueue(settings: Settings, new_run: NewRun) -> tuple[int, str]:
    from runyard.store.lite import LiteStore

    lite = LiteStore.open(settings.db)
    if lite is not None:
        try:
            return lite.create_run(new_run)
        finally:
            lite.close()
    from runyard.store.home import open_store

    opened = open_store(settings)
    try:
        run = opened.store.create_run(new_run)
        return run.number, run.id
    finally:
        opened.close()
