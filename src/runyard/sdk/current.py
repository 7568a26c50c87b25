"""``runyard.init()`` and the one explicit "current run" of this process.

``init()`` resolves the settings once, opens the run's spool (the first record, the start event,
reaches the kernel within a flush interval), starts the writer, the hardware sampler and the
environment collector in the background, tees stdout and stderr, makes sure the local agent runs,
and returns. It never touches the database: the agent creates the run in the store from the spool.
"""

from __future__ import annotations

import atexit
import secrets
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from runyard.errors import InvalidArgument
from runyard.names import validate_key, validate_label, validate_project_name, validate_run_name
from runyard.sdk.run import Run
from runyard.spool import records

_current: Run | None = None
_lock = threading.RLock()


def current_run() -> Run | None:
    """The run started by the last ``init()`` in this process, until it finishes."""
    return _current


def clear(run: Run) -> None:
    global _current
    with _lock:
        if _current is run:
            _current = None


def _require() -> Run:
    run = _current
    if run is None:
        raise InvalidArgument("no active run: call runyard.init() first")
    return run


def log(metrics: Mapping[str, Any], step: int | None = None) -> None:
    """``log()`` on the current run."""
    _require().log(metrics, step)


def finish(status: str | None = None, exit_code: int | None = None) -> None:
    """``finish()`` on the current run (nothing if there is none)."""
    run = _current
    if run is not None:
        run.finish(status, exit_code)


def init(
    project: str | None = None,
    name: str | None = None,
    config: Mapping[str, Any] | None = None,
    labels: Iterable[str] = (),
    notes: str | None = None,
) -> Run:
    """Start logging a run, or attach to the run that ``runyard run`` launched (``RUNYARD_RUN_ID``).

    Returns at once. The run is finished at interpreter exit (an uncaught exception marks it failed
    and puts the traceback in its log), or by ``run.finish()``, or at the end of a ``with`` block.
    """
    from runyard.config import resolve

    global _current
    settings = resolve()
    project = validate_project_name(project) if project is not None else settings.project
    if name is not None:
        validate_run_name(name)
    label_list = [validate_label(x) for x in labels]
    if config is not None and not isinstance(config, Mapping):
        raise InvalidArgument(f"config must be a mapping, not {type(config).__name__}")
    for key in config or {}:
        validate_key(key, "config")  # as ingest checks it (ingest/fields.py)
    if notes is not None and not isinstance(notes, str):
        raise InvalidArgument(f"notes must be a string, not {type(notes).__name__}")

    with _lock:
        if _current is not None:
            _current.finish()
        run_id = settings.run_id or _new_id()
        from runyard.sdk.agent_launch import ensure_agent
        from runyard.sdk.environment import basics
        from runyard.sdk.writer import Writer
        from runyard.spool.rundir import TARGET_FILE, run_dir, target_key

        directory = run_dir(settings.spool_dir, run_id)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / TARGET_FILE).write_text(target_key(settings))
        writer = Writer(directory, run_id, secrets.token_hex(6), fsync=settings.fsync,
                        queue_limit=settings.queue_limit)
        writer.start()
        run = Run(settings, writer, run_id, project, name, attached=settings.run_id is not None, config=config)
        env = basics()
        start: dict[str, Any] = {
            "event": "start", "attach": run.attached, "project": project, "name": name,
            "config": dict(config or {}), "labels": label_list, "notes": notes or "",
            "command": env["argv"], "host": env["host"], "environment": env,
        }
        writer.queue.append((records.UNNUMBERED, records.EVENT, time.time(), start))
        _start_background(run, settings)
        _current = run
    ensure_agent(settings)  # the local ingester, or with RUNYARD_SERVER the shipper
    # If the agent dies during a long run, the next heartbeat starts another.
    writer.on_heartbeat = lambda: ensure_agent(settings)
    return run


def _new_id() -> str:
    from runyard.ids import new_ulid

    return new_ulid()


def _start_background(run: Run, settings: Any) -> None:
    writer = run._writer
    append = writer.queue.append
    if settings.system_interval > 0:
        from runyard.sdk.sampler import Sampler

        sampler = Sampler(settings.system_interval, writer.queue.extend)
        sampler.start()
        run._on_finish.append(sampler.stop)
    if not settings.captured:
        from runyard.sdk import tee

        run._on_finish.append(tee.install(append))
    # Loaded now, not by finish(): a script that ends right after logging reaches finish() through
    # atexit, when the interpreter refuses what staging's thread pool registers on import, and the
    # run's records would never be flushed.
    from runyard.sdk import environment, staging  # noqa: F401

    collector = threading.Thread(target=_collect_environment, args=(run,), name="runyard-environment", daemon=True)
    collector.start()
    # Finish waits a little for the environment facts (listing packages takes a moment), not forever.
    run._on_finish.append(lambda: collector.join(timeout=5.0))
    _install_exit_hooks(run)
    _forget_in_child(run)


def _collect_environment(run: Run) -> None:
    from runyard.sdk import environment, staging

    try:
        facts, diff = environment.collect_in_subprocess(Path.cwd())
        event: dict[str, Any] = {"event": "environment", **facts}
        if diff:
            sha, size = staging.stage_bytes(run._writer.directory / staging.FILES_DIR, diff)
            run._record_artifact("code/uncommitted.diff", size, sha)
            event["git_diff_ref"] = f"sha256:{sha}"
        run._emit(records.EVENT, event)
    except Exception as e:  # noqa: BLE001 - environment facts are a nicety, never a failure
        run._absorb(e, raise_strict=False)


def _forget_in_child(run: Run) -> None:
    """In a forked child (a data-loader worker, say) the run's threads do not exist: whatever the
    child logs would never be written, so the child logs nothing and leaves the run alone."""
    import os

    def after_fork() -> None:
        run._finished = True
        run._warned_after_finish = True
        clear(run)

    os.register_at_fork(after_in_child=after_fork)


def _install_exit_hooks(run: Run) -> None:
    previous_hook = sys.excepthook

    def excepthook(exc_type: Any, exc: Any, tb: Any) -> None:
        previous_hook(exc_type, exc, tb)  # prints the traceback, which the tee puts in the run's log
        if _current is run and exc_type is not KeyboardInterrupt:
            run.finish(status="failed")
        elif _current is run:
            run.finish(status="stopped")

    sys.excepthook = excepthook

    def at_exit() -> None:
        if sys.excepthook is excepthook:
            sys.excepthook = previous_hook
        run.finish()

    atexit.register(at_exit)
    run._on_finish.append(lambda: atexit.unregister(at_exit))
