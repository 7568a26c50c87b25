"""The local agent: one background process per database that ingests every run's spool and starts
queued runs when there is room (the scheduler).

Started on demand (by ``runyard.init()``, ``finish()``, or any command that finds work), detached
in its own session, it is SQLite's only steady writer for logged data, so that many runs logging at
once do not contend for the database's lock. It exits after ``IDLE_EXIT`` seconds without live
writers or records. Its death loses nothing: the spools stay, and the next agent (or
``runyard sync``) resumes from their acknowledged offsets.

With ``RUNYARD_SERVER`` set it is the shipper instead: it sends every spool of the home to that
server (see ingest/shipper.py), retrying with backoff while the server is away, and runs nothing.

    python -m runyard.agent            # uses RUNYARD_HOME, RUNYARD_DB, RUNYARD_ARTIFACTS, RUNYARD_SERVER
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import threading
import time
from typing import Any

from runyard.config import Settings, resolve
from runyard.errors import AccessDenied, RunyardError
from runyard.sdk.agent_launch import stop_agents as stop_agents  # where it always was, for callers

IDLE_EXIT = 10.0
#: Pause after an unexpected error in a loop, so that a persistent one does not spin.
ERROR_PAUSE = 1.0
#: Niceness of the ingest thread (and of a shipping agent): training processes come first.
INGEST_NICENESS = 10
BUSY_PAUSE = 0.05
IDLE_PAUSE = 0.25
#: How often rules about time passing (stalled) are evaluated.
ALERT_TICK = 5.0


def describe(error: BaseException) -> str:
    """An exception in one line: its type and message, and where it was raised (the traceback's last
    frame), so that a bug report from an agent's log points at the code."""
    import traceback

    text = f"{type(error).__name__}: {error}" if not isinstance(error, RunyardError) else str(error)
    frames = traceback.extract_tb(error.__traceback__)
    if frames and not isinstance(error, RunyardError):
        last = frames[-1]
        text += f" (at {last.filename}:{last.lineno} in {last.name})"
    return text


def report_error(where: str, error: BaseException) -> None:
    """Print an error a loop survived to the agent's stderr (its log, home/agents/<key>.log)."""
    print(f"runyard agent: {where}: {describe(error)}", file=sys.stderr, flush=True)


def main() -> int:
    settings = resolve()
    from runyard.sdk.agent_launch import agent_lock_path
    from runyard.spool.rundir import target_key

    path = agent_lock_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return 0  # another agent serves this database
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())

    if settings.server:
        return _ship(settings)
    from runyard.exec.gpus import gpu_count
    from runyard.exec.local import LocalExecutor
    from runyard.exec.scheduler import Scheduler
    from runyard.ingest.alerting import Watcher
    from runyard.ingest.sink import StoreSink
    from runyard.ingest.tailer import Tailer
    from runyard.store.home import open_store

    opened = open_store(settings)
    watcher = Watcher(opened.store, sender=alert_sender(settings))
    executor = LocalExecutor(settings.home)
    tailer = Tailer(StoreSink(opened.store, opened.artifacts, watcher), settings.spool_dir, target_key(settings),
                    abandoned=executor.end_abandoned)
    scheduler = Scheduler(opened.store, settings, executor, gpu_count(),
                          on_status=watcher.after_status)
    schedulers = [scheduler]
    clusters = _ClusterSchedulers(settings, opened, watcher)
    outbox = alert_outbox(opened.store, settings, holder=scheduler.agent).start()
    # Ingest runs in a thread of lower CPU priority: a training process logging at full speed must
    # not lose CPU time to the ingest of its own records. The scheduler stays in the main thread, at
    # normal priority, because the supervisors it starts inherit the priority of the starting thread.
    ingest = _Ingest(tailer, watcher)
    thread = threading.Thread(target=ingest.run, name="runyard-ingest", daemon=True)
    thread.start()
    last_work = time.monotonic()
    try:
        while thread.is_alive():
            started = waiting = 0
            schedulers[1:] = clusters.get()
            for each in schedulers:
                try:
                    now_started, now_waiting = each.tick()
                    started += now_started
                    # Runs on a cluster are work while they run: their jobs are watched from here.
                    waiting += now_waiting + (each.holding if each is not scheduler else 0)
                except Exception as e:  # noqa: BLE001 - the queue waits for the next tick, the agent goes on
                    report_error("scheduler" if each is scheduler else f"scheduler ({each.kind})", e)
                    # Failing is not working: an agent whose database is gone still leaves when idle (the
                    # next process that needs one starts another).
                    time.sleep(ERROR_PAUSE)
            now = time.monotonic()
            # Undelivered notices are work too: a dead webhook keeps being retried (alerts/dispatch.py),
            # as long as this agent is the one sending them.
            sending = outbox.holding() and outbox.dispatcher.pending()
            if started or waiting or ingest.busy_at > now - IDLE_PAUSE * 2 or sending:
                last_work = now
            elif now - last_work > IDLE_EXIT and now - ingest.busy_at > IDLE_EXIT:
                return 0
            time.sleep(IDLE_PAUSE)
        return 1
    finally:
        ingest.stop = True
        thread.join(timeout=10)
        try:
            outbox.poll()  # what the last batches fired: stops done, notices handed over
            outbox.dispatcher.drain(timeout=10)
        except Exception as e:  # noqa: BLE001 - exiting: what is left stays pending in the store
            report_error("alerts", e)
        outbox.close()
        for each in schedulers:
            each.close()
        opened.close()


class _ClusterSchedulers:
    """The scheduler of the Ray cluster of the ``ray`` setting, made once the cluster answers (until
    then, and without Ray installed, runs sent to Ray stay queued; local runs go on)."""

    #: Seconds between tries while the cluster does not answer.
    RETRY = 10.0

    def __init__(self, settings: Settings, opened: Any, watcher: Any) -> None:
        self.settings, self.opened, self.watcher = settings, opened, watcher
        self.made: list[Any] = []
        self._tried = -float("inf")

    def get(self) -> list[Any]:
        if self.made or not self.settings.ray or time.monotonic() - self._tried < self.RETRY:
            return self.made
        self._tried = time.monotonic()
        from runyard.exec.ray import RayExecutor
        from runyard.exec.scheduler import Scheduler

        try:
            executor = RayExecutor(self.settings, self.opened.store, self.opened.artifacts)
            machine = executor.machine()
        except Exception as e:  # noqa: BLE001 - local runs go on; the cluster is tried again
            report_error("ray", e)
            return self.made
        self.made = [Scheduler(self.opened.store, self.settings, executor, machine.gpus, machine=machine,
                               on_status=self.watcher.after_status)]
        return self.made


class _Ingest:
    """The agent's ingest loop, in its own thread (see ``main``)."""

    def __init__(self, tailer: Any, watcher: Any = None) -> None:
        self.tailer = tailer
        self.watcher = watcher
        self._ticked = 0.0
        self.stop = False
        #: When the last pass found live writers or records (monotonic seconds).
        self.busy_at = time.monotonic()

    def run(self) -> None:
        with contextlib.suppress(OSError, AttributeError):  # not permitted, or not Linux: normal priority
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), INGEST_NICENESS)
        while not self.stop:
            try:
                report = self.tailer.poll()
            except Exception as e:  # noqa: BLE001 - nothing may end ingest for the whole home
                report_error("ingest", e)
                time.sleep(ERROR_PAUSE)
                continue
            if report.alive or report.records:
                self.busy_at = time.monotonic()
            self._tick_alerts()
            time.sleep(BUSY_PAUSE if report.alive else IDLE_PAUSE)

    def _tick_alerts(self) -> None:
        """Rules about time passing (a stalled run), every ALERT_TICK seconds."""
        now = time.monotonic()
        if self.watcher is None or now - self._ticked < ALERT_TICK:
            return
        self._ticked = now
        try:
            self.watcher.tick()
        except Exception as e:  # noqa: BLE001 - a failing rule must not end ingest
            report_error("alerts", e)


def alert_outbox(store: Any, settings: Settings, holder: str | None = None) -> Any:
    """Acts on fired alerts: stops runs through their supervisors, delivers to channels, while it
    holds the database's outbox lease (the ``lease`` setting's seconds, renewed). Not started: the agent and
    ``runyard server`` start it (an app built in a test starts no threads)."""
    import functools

    from runyard.alerts.dispatch import Dispatcher, for_home
    from runyard.config import HOME_CONFIG_NAME
    from runyard.exec.control import stop_for_alert
    from runyard.ingest.alerting import Outbox

    dispatcher = Dispatcher(for_home(settings.home / HOME_CONFIG_NAME))
    return Outbox(store, dispatcher, functools.partial(stop_for_alert, store, settings), holder=holder,
                  lease=settings.lease, sender=alert_sender(settings))


def alert_sender(settings: Settings) -> str:
    """The outbox group of this home: what its processes fire, an outbox with its [notify] delivers."""
    from runyard.alerts.dispatch import sender_of
    from runyard.config import HOME_CONFIG_NAME

    return sender_of(settings.home / HOME_CONFIG_NAME)


def _ship(settings: Settings) -> int:
    """Remote mode: ship every spool of this home to the server, retrying with backoff until it answers."""
    from runyard.client import Client
    from runyard.credential import for_settings
    from runyard.ingest.shipper import Backoff, RemoteSink
    from runyard.ingest.tailer import PollReport, Tailer
    from runyard.spool.rundir import target_key

    assert settings.server is not None
    with contextlib.suppress(OSError):  # shipping never competes with training for the CPU
        os.nice(INGEST_NICENESS)
    client = Client(settings.server, for_settings(settings))
    tailer = Tailer(RemoteSink(client), settings.spool_dir, target_key(settings))
    backoff = Backoff()
    last_work = time.monotonic()
    try:
        while True:
            report: PollReport | None = None
            asked = 0.0  # what a busy server asked for (Retry-After)
            try:
                report = tailer.poll()
            except AccessDenied as e:
                # A revoked or wrong token: the next process that logs starts an agent with its token.
                print(f"runyard agent: {e}; exiting until a process with a valid token needs one",
                      file=sys.stderr, flush=True)
                return 1
            except RunyardError as e:
                failure = str(e)
                asked = getattr(e, "retry_after", 0.0)
            except Exception as e:  # noqa: BLE001 - nothing may end shipping: report it, back off, go on
                failure = f"shipping: {describe(e)}"
            else:
                failure = "; ".join(f"run {w.run_number or w.run_id}: {w.error}" for w in report.errors)
                asked = report.retry_after
            now = time.monotonic()
            if failure or report is None:
                delay = backoff.failed(asked)
                print(f"runyard agent: {failure}; retrying in {delay:.1f} s", file=sys.stderr, flush=True)
                last_work = now  # unshipped records are work: never idle out on them
                time.sleep(delay)
                continue
            backoff.succeeded()
            if report.alive or report.records:
                last_work = now
            elif now - last_work > IDLE_EXIT:
                return 0
            time.sleep(BUSY_PAUSE if report.alive else IDLE_PAUSE)
    finally:
        client.close()

if __name__ == "__main__":
    raise SystemExit(main())
