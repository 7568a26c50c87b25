"""The read API: runs, their metrics (every point, or exact envelopes), logs and artifacts.

    api = runyard.Api()
    r = api.run("12")                    # number, name or unique id prefix
    r.history("loss")                    # History(step, time, value) of numpy arrays
    r.history("loss", as_frame=True)     # a pandas DataFrame (pandas installed)
    r.envelope("loss", buckets=1000)     # exact min/max/mean/last/count per bucket
    api.runs(project="gan", labels=["baseline"], status="finished")

Opening the API ingests what crashed processes left in the spool, so their runs read complete.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from runyard.config import Settings, resolve
from runyard.errors import ConfigError
from runyard.types import RunStatus

if TYPE_CHECKING:
    from pathlib import Path

    import numpy as np
    from numpy.typing import NDArray

    from runyard.client import Client
    from runyard.exec.control import Overrides
    from runyard.store.api import ArtifactEntry, LogLine, Run, SeriesInfo
    from runyard.store.artifacts import ArtifactStore
    from runyard.store.home import Opened
    from runyard.store.series import Envelope
    from runyard.store.sql import SqlStore


@dataclass(frozen=True)
class History:
    """Every point of one metric, in step order."""

    step: NDArray[np.int64]
    time: NDArray[np.float64]
    value: NDArray[np.float64]

    def __len__(self) -> int:
        return int(self.step.shape[0])


class RunView:
    """A run as the store has it. ``refresh()`` reads it again."""

    def __init__(self, api: Api, run: Run) -> None:
        self._api = api
        self._run = run

    def __getattr__(self, name: str) -> Any:
        return getattr(self._run, name)

    def __repr__(self) -> str:
        r = self._run
        return f"<RunView {r.number} {r.display_name!r} {r.status.value} project={r.project!r}>"

    @property
    def record(self) -> Run:
        return self._run

    def refresh(self) -> RunView:
        self._run = self._api.store.get_run(self._run.number)
        return self

    def metrics(self) -> list[SeriesInfo]:
        return self._api.store.list_series(self._run.number)

    def history(self, key: str, start: int | None = None, end: int | None = None,
                as_frame: bool = False) -> Any:
        points = self._api.store.history(self._run.number, key, start, end)
        history = History(points.steps, points.times, points.values)
        if not as_frame:
            return history
        pandas = _pandas()
        return pandas.DataFrame({"step": history.step, "time": history.time, "value": history.value})

    def envelope(self, key: str, buckets: int = 1000, start: int | None = None, end: int | None = None,
                 as_frame: bool = False) -> Any:
        envelope: Envelope = self._api.store.envelope(self._run.number, key, buckets, start, end)
        if not as_frame:
            return envelope
        return _pandas().DataFrame(envelope.to_rows())

    def logs(self, after: int = 0, limit: int = 1000) -> list[LogLine]:
        return self._api.store.read_logs(self._run.number, after, limit)

    def artifacts(self, prefix: str = "") -> list[ArtifactEntry]:
        return self._api.store.list_artifacts(self._run.number, prefix)


def _pandas() -> Any:
    try:
        import pandas
    except ImportError:
        raise ConfigError("as_frame=True needs pandas: pip install 'runyard[pandas]'") from None
    return pandas


class Api:
    """Runs of the configured store: the local home (``RUNYARD_HOME`` / ``RUNYARD_DB``), or the server
    named by ``RUNYARD_SERVER`` (with ``RUNYARD_TOKEN``)."""

    def __init__(self, settings: Settings | None = None, catch_up: bool = True) -> None:
        self.settings = settings or resolve()
        self._opened: Opened | None = None
        self._client: Client | None = None
        if self.settings.server:
            from runyard.client import Client, RemoteStore
            from runyard.credential import for_settings

            self._client = Client(self.settings.server, for_settings(self.settings))
            self._store: Any = RemoteStore(self._client)
        else:
            from runyard.store.home import open_store

            self._opened = open_store(self.settings)
            self._store = self._opened.store
        if catch_up and self._client is None:
            # Locally, what crashed processes left in the spool is ingested now, so their runs read
            # complete. With a server the agent ships it; reading must not need a writer's token.
            self.sync(include_live=False)

    @property
    def store(self) -> SqlStore:
        """The store, or with a server its remote twin (same calls for reading, labels and notes)."""
        store: SqlStore = self._store
        return store

    @property
    def remote(self) -> bool:
        return self._client is not None

    @property
    def artifacts(self) -> ArtifactStore:
        """The artifact store (a directory or S3); with a server there is none here."""
        if self._opened is None:
            raise ConfigError("with RUNYARD_SERVER set the artifact store is the server's: run this on the "
                              "server's machine, without RUNYARD_SERVER")
        return self._opened.artifacts

    @property
    def content(self) -> ArtifactStore:
        """Where content is read by its SHA-256 (a run's code snapshot, its artifacts): the home's
        artifact store, or with a server its blob routes (``client.ServerBlobs``: the reading part of
        ``ArtifactStore``, which ``exec.snapshot.materialise`` uses)."""
        if self._client is not None:
            from typing import cast

            from runyard.client import ServerBlobs

            return cast("ArtifactStore", ServerBlobs(self._client))
        return self.artifacts

    def close(self) -> None:
        self._store.close()

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def sync(self, runs: Sequence[str] | None = None, include_live: bool = True) -> Any:
        """Ingest (or with a server, ship) pending spools now, as ``runyard sync`` does; returns the report."""
        from runyard.ingest.sink import StoreSink
        from runyard.ingest.tailer import Tailer
        from runyard.spool.rundir import target_key

        target = target_key(self.settings)
        if self._client is not None:
            from runyard.ingest.shipper import RemoteSink

            tailer = Tailer(RemoteSink(self._client), self.settings.spool_dir, target)
        else:
            assert self._opened is not None
            # Whoever finds a supervisor dead first kills what is left of its run (its slot is freed).
            from runyard.ingest.alerting import Watcher

            # What this catch-up fires belongs to this home's outbox group, as the agent's would.
            watcher = Watcher(self._opened.store, sender=self._alert_sender)
            tailer = Tailer(StoreSink(self._opened.store, self._opened.artifacts, watcher), self.settings.spool_dir,
                            target, abandoned=self._end_abandoned)
        return tailer.poll(include_live=include_live, run_ids=runs)

    def _alert_sender(self) -> str:
        from runyard.alerts.dispatch import sender_of
        from runyard.config import HOME_CONFIG_NAME

        return sender_of(self.settings.home / HOME_CONFIG_NAME)

    def stop(self, run: Run) -> str:
        """Stop a run; returns what happened, in words."""
        if self._client is not None:
            return str(self._store.stop(run.number))
        from runyard.exec.control import stop_run

        return stop_run(self.store, self.settings, run)

    def rerun(self, parent: Run, params: dict[str, str], name: str | None, overrides: Overrides | None = None) -> int:
        """Queue the parent's launch again with changed params (and --pip, --env, --timeout, --mount,
        --gpus in ``overrides``); returns the new run's number."""
        if self._client is not None:
            from dataclasses import asdict

            return int(self._store.rerun(parent.number, params, name, asdict(overrides) if overrides else None))
        from pathlib import Path

        from runyard.exec.control import rerun

        return rerun(self.settings, parent, params, name, Path.cwd(), overrides)

    def export(self, run: Run, entry: ArtifactEntry, dest_root: Path, relpath: str) -> Path:
        """Write one artifact of ``run`` to ``dest_root/relpath``, with the mode it had in the run
        when that was recorded (else the copy's own, 0600)."""
        if self._client is not None:
            from runyard.client import RemoteArtifacts

            target = RemoteArtifacts(self._client).download(run.number, entry, dest_root, relpath)
        else:
            assert self._opened is not None
            target = self._opened.artifacts.export(entry.content_ref, dest_root, relpath)
        if entry.mode is not None:
            target.chmod(entry.mode & 0o777)
        return target

    def _end_abandoned(self, run_id: str) -> None:
        from runyard.exec.local import LocalExecutor  # only when a supervisor died: keeps start-up light

        LocalExecutor(self.settings.home).end_abandoned(run_id)

    def run(self, ref: str | int) -> RunView:
        return RunView(self, self.store.get_run(ref))

    def runs(self, project: str | None = None, labels: Iterable[str] = (),
             status: str | RunStatus | Iterable[str | RunStatus] | None = None, sort: str = "number",
             descending: bool = True, limit: int | None = None) -> list[RunView]:
        from runyard.store.api import RunQuery

        if status is None:
            statuses: list[RunStatus] = []
        elif isinstance(status, str | RunStatus):
            statuses = [RunStatus(status)]
        else:
            statuses = [RunStatus(s) for s in status]
        out: list[RunView] = []
        cursor = None
        while True:
            page_size = 1000 if limit is None else min(1000, limit - len(out))
            page = self.store.list_runs(RunQuery(project=project, labels=list(labels), status=statuses, sort=sort,
                                                 descending=descending, limit=page_size, cursor=cursor))
            out += [RunView(self, r) for r in page.items]
            cursor = page.next_cursor
            if cursor is None or (limit is not None and len(out) >= limit):
                return out
