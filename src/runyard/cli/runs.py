"""The run commands: run, ps, ls, show, logs, stop, cp, rerun, label, note.

``run`` and ``ps`` start fast on a SQLite home (no SQLAlchemy, no rich); the others open the store.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from runyard.cli.printable import printable
from runyard.config import Settings, resolve
from runyard.errors import InvalidArgument, NotFound
from runyard.types import RunKind, RunStatus

TERMINAL = {"finished", "failed", "stopped", "timeout", "lost"}


def _print_json(value: Any) -> None:
    from runyard.store import jsonvalues

    # NaN and the infinities as the strings "NaN", "Infinity", "-Infinity" (README: JSON output)
    sys.stdout.write(json.dumps(jsonvalues.public(value), indent=2) + "\n")


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    # Cells hold what runs sent (names, labels, keys): control characters escaped (cli/printable.py).
    headers = [printable(h) for h in headers]
    rows = [[printable(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    if seconds < 86400:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def _number(value: float | None) -> str:
    if value is None:
        return "nan"
    return f"{value:.4g}"


# -- run ------------------------------------------------------------------------------------------

def run(command: list[str], argv_form: bool, **o: Any) -> int:
    import os

    from runyard.exec import options
    from runyard.exec.environment import inherited
    from runyard.exec.submit import Submission, submit

    settings = resolve()
    shell = not argv_form and len(command) == 1
    params = options.params(o["params"])
    kind, notes = RunKind.SCRIPT, tuple[str, ...]()
    # One word naming a notebook, whether after -- or not; a shell line that ends in .ipynb
    # ('papermill in.ipynb out.ipynb') stays a shell line.
    if len(command) == 1 and command[0].endswith(".ipynb") and not any(c.isspace() for c in command[0]):
        kind, shell = RunKind.NOTEBOOK, False
        command, notes = _notebook(command[0], params)
    if settings.server:
        for note in notes:
            print(f"runyard: warning: {note}", file=sys.stderr)
        return _run_on_server(settings, command, shell, o, kind)
    sub = Submission(
        command=command, shell=shell, cwd=Path.cwd(), project=o["project"], name=o["name"], labels=o["labels"],
        note=o["note"], params=params, pip=o["pip"], requirements=o["requirements"], mounts=o["mounts"],
        env=_env_options(o["env"]), environment=inherited(os.environ), gpus=o["gpus"], cpus=o["cpus"],
        memory=o["memory"], timeout=o["timeout"], priority=options.priority(o["priority"], o["machine"],
                                                                            settings.machines),
        machine=o["machine"], executor=o["on"], environment_profile=o["environment_profile"], kind=kind,
    )
    from runyard.cli.transfer import transfer_bar

    with transfer_bar("storing the snapshot") as progress:
        done = submit(settings, sub, progress)
    done = dataclasses.replace(done, warnings=(*notes, *done.warnings))
    for warning in done.warnings:
        print(f"runyard: warning: {warning}", file=sys.stderr)
    if o["as_json"]:
        print(json.dumps({"number": done.number, "id": done.run_id, "status": "queued",
                          "snapshot_files": done.files, "snapshot_new_bytes": done.new_bytes,
                          "warnings": list(done.warnings)}))
    else:
        print(f"run {done.number} queued")
    if o["follow"]:
        return _follow(settings, str(done.number))
    return 0


def _notebook(path: str, params: dict[str, str]) -> tuple[list[str], tuple[str, ...]]:
    """The command of a notebook run, and its warnings: the notebook read and its parameters checked
    here, so that a broken notebook or an unknown parameter queues nothing."""
    from runyard.exec.submit import notebook_command
    from runyard.notebook.params import check, load

    nb = load(Path(path))  # relative to this directory, and said as typed
    return notebook_command(path), check(path, nb, params)


def _env_options(texts: Sequence[str]) -> dict[str, str]:
    """``--env KEY=VALUE``, or ``--env KEY`` for this shell's value of KEY (as ``docker run -e KEY``)."""
    import os

    from runyard.exec import options

    env = {}
    for text in texts:
        if "=" in text:
            key, value = options.key_value(text, "--env")
        else:
            try:
                key, _ = options.key_value(f"{text}=", "--env")
            except InvalidArgument:
                raise InvalidArgument(f"--env {text!r}: expected KEY=VALUE, or KEY alone for this shell's value; "
                                      "KEY made of letters, digits and _") from None
            if key not in os.environ:
                raise InvalidArgument(f"--env {key}: {key} is not set in this shell; give its value with "
                                      f"--env {key}=VALUE")
            value = os.environ[key]
        env[key] = value
    return env


def _run_on_server(settings: Settings, command: list[str], shell: bool, o: dict[str, Any],
                   kind: RunKind = RunKind.SCRIPT) -> int:
    """`runyard run` with RUNYARD_SERVER: snapshot here, upload what the server lacks, queue it there."""
    queued, files, uploaded = queue_on_server(settings, command, shell, o, kind)
    if o["as_json"]:
        print(json.dumps({"number": queued["number"], "id": queued["id"], "status": "queued",
                          "snapshot_files": files, "snapshot_new_bytes": uploaded}))
    else:
        print(f"run {queued['number']} queued")
    if o["follow"]:
        return _follow(settings, str(queued["number"]))
    return 0


def queue_on_server(settings: Settings, command: list[str], shell: bool, o: dict[str, Any],
                    kind: RunKind = RunKind.SCRIPT) -> tuple[dict[str, Any], int, int]:
    """Snapshot here, upload what the server lacks, queue the run there (``o``: the options of
    `runyard run`); the server's answer {number, id, status}, the snapshot's files and the bytes sent."""
    from runyard.cli.transfer import transfer_bar
    from runyard.client import Client
    from runyard.credential import for_settings
    from runyard.exec import options
    from runyard.exec.snapshot import manifest_of, take
    from runyard.exec.submit import with_environment
    from runyard.store.artifacts import CountedReads, local_cache_of, sha_of_ref

    # The named environment is this machine's configuration: sent as the packages it names.
    pip = with_environment([options.pip_spec(p) for p in o["pip"]], o["environment_profile"], settings)
    for text in o["mounts"]:
        source, _ = options.mount(text)
        if (Path.cwd() / source).expanduser().exists():
            raise InvalidArgument(f"--mount {text!r}: a local path cannot be mounted on a server's run; log the "
                                  "data as an artifact of a run and mount RUN:PATH")
    requirements = None
    if o["requirements"] is not None:
        try:
            requirements = Path(o["requirements"]).read_text()
        except OSError as e:
            raise InvalidArgument(f"--requirements {o['requirements']}: cannot read it ({e.strerror})") from None
        options.requirement_lines(requirements, f"--requirements {o['requirements']}", urls=False)  # as the server
    artifacts = local_cache_of(settings)  # this machine's cache: unchanged files are not hashed again
    settings.home.mkdir(parents=True, exist_ok=True)
    artifacts.ensure()
    snap = take(Path.cwd(), artifacts, settings.home / "snapshot-cache.json")
    if kind is RunKind.NOTEBOOK:  # named from the snapshot's root, where the run starts on the server
        from runyard.exec.submit import notebook_command, notebook_from_root

        command = notebook_command(notebook_from_root(command[-1], Path.cwd(), snap.root))
    wanted = [sha_of_ref(snap.id)] + [sha for sha, _ in manifest_of(snap.id, artifacts).values()]
    if snap.git_diff_ref:
        wanted.append(sha_of_ref(snap.git_diff_ref))
    client = Client(settings.server or "", for_settings(settings))
    try:
        uploaded = 0
        missing = client.missing_blobs(wanted)
        total = sum(artifacts.size(sha) or 0 for sha in missing)
        with transfer_bar("uploading the snapshot") as advance:

            def sent(n: int) -> None:
                nonlocal uploaded
                uploaded += n
                advance(uploaded, total)

            for sha in missing:
                with artifacts.open(f"sha256:{sha}") as f:
                    client.put_blob(sha, CountedReads(f, sent))  # type: ignore[arg-type]
        body = {
            "command": list(command), "shell": shell, "snapshot": snap.id, "git_commit": snap.git_commit,
            "git_branch": snap.git_branch, "git_diff_ref": snap.git_diff_ref, "project": o["project"],
            "name": o["name"], "labels": list(o["labels"]), "note": o["note"] or "",
            "params": options.params(o["params"]), "pip": pip,
            "requirements": requirements, "mounts": list(o["mounts"]),
            "env": _env_options(o["env"]), "gpus": o["gpus"], "cpus": o["cpus"],
            "memory": o["memory"], "timeout": o["timeout"], "priority": o["priority"], "machine": o["machine"],
            "executor": o["on"], "kind": kind.value,
        }
        queued = client.request("POST", "/runs", json=body).json()
    finally:
        client.close()
    return queued, snap.files, uploaded


# -- ps and ls ------------------------------------------------------------------------------------

def ps(as_json: bool) -> int:
    from runyard.store.lite import LiteStore

    settings = resolve()
    lite = None if settings.server else LiteStore.open(settings.db)
    if lite is not None:
        try:
            active = lite.active_runs()
        finally:
            lite.close()
    else:
        active = _active_runs_full(settings)
    rows = [{"number": r.number, "name": r.name, "project": r.project, "status": r.status.value,
             "created_at": r.created_at, "started_at": r.started_at,
             "gpus": r.resources.get("assigned_gpus", []) or r.resources.get("gpus", 0),
             "latest": r.latest, "executor": r.executor, "kind": r.kind.value} for r in active]
    for row, found in zip(rows, active, strict=True):
        if row["kind"] == "serve":
            row["url"] = _served_at(settings, found)
    if any(r["status"] == "queued" for r in rows) and not settings.server:
        from runyard.sdk.agent_launch import ensure_agent

        ensure_agent(settings)  # a queued run needs an agent; if the last one died, this starts another
    if as_json:
        _print_json(rows)
        return 0
    if not rows:
        print("nothing queued or running")
        return 0
    now = time.time()
    table = []
    for r in rows:
        latest = "  ".join(f"{k}={_number(v)}" for k, v in list(r["latest"].items())[:4])
        if r["kind"] == "serve":  # where it answers says more than its request counts
            latest = r["url"] or "(loading)"
        gpus = ",".join(map(str, r["gpus"])) if isinstance(r["gpus"], list) else str(r["gpus"] or "-")
        # Runs sent to a cluster say so: a queued one waits for an agent that has that executor.
        where = f" on {r['executor']}" if r["executor"] not in (None, "local", "sdk") else ""
        table.append([str(r["number"]), r["name"] or "-", r["status"] + where, _age(now - r["created_at"]),
                      gpus or "-", latest])
    print(_table(*_with_kinds(["RUN", "NAME", "STATUS", "AGE", "GPUS", "LATEST"], table, [r["kind"] for r in rows])))
    return 0


def _served_at(settings: Settings, run: Any) -> str | None:
    """Where a serve run answers: its address on this machine, or its path on the server."""
    if settings.server:
        # On the server's lab origin (another port): `runyard serve --url N` prints the whole address.
        return f"/serve/{run.name}/ (runyard serve --url {run.number})" if run.status.value == "running" else None
    from runyard.serve.connection import read_serve_file

    found = read_serve_file(settings.home, run.id)
    return str(found["url"]) if found else None


def _active_runs_full(settings: Settings) -> list[Any]:
    """``LiteStore.active_runs`` through the full store (or a server), for homes the fast path cannot open."""
    from runyard.api import Api
    from runyard.store.lite import ActiveRun
    from runyard.types import RunStatus

    api = Api(settings, catch_up=False)
    try:
        store = api.store
        runs = store.runs_with_status([RunStatus.RUNNING, RunStatus.STARTING, RunStatus.QUEUED])
        order = {RunStatus.RUNNING: 0, RunStatus.STARTING: 1, RunStatus.QUEUED: 2}
        runs.sort(key=lambda r: (order[r.status], -r.priority, r.number))
        return [ActiveRun(r.number, r.id, r.name, r.project, r.status, r.created_at, r.started_at, r.resources,
                          {s.key: s.last_value for s in store.list_series(r.number) if not s.key.startswith("system/")},
                          r.executor, r.kind)
                for r in runs]
    finally:
        api.close()


def _open() -> Any:
    from runyard.api import Api

    return Api()


def ls(project: str | None, labels: tuple[str, ...], statuses: tuple[str, ...], sort: str, asc: bool, limit: int,
       as_json: bool, columns: str | None = None, kinds: tuple[str, ...] = ()) -> int:
    from runyard.cli import columns as cols

    extra = cols.parse(columns) if columns is not None else []
    if not as_json and not extra and sort == "number" and _ls_fast(project, labels, statuses, asc, limit, kinds):
        return 0
    from runyard.store.api import RunQuery
    from runyard.types import RunStatus

    api = _open()
    try:
        page = api.store.list_runs(RunQuery(project=project, labels=list(labels),
                                            status=[RunStatus(s) for s in statuses],
                                            kinds=[RunKind(k) for k in kinds], sort=sort,
                                            descending=not asc, limit=limit))
        if as_json:
            rows = [_run_json(r) for r in page.items]
            if extra:
                for row, r in zip(rows, page.items, strict=True):
                    row["columns"] = {c: cols.value_of(r, c) for c in extra}
            _print_json(rows)
            return 0
        _print_runs(page.items, extra)
        return 0
    finally:
        api.close()


def _ls_fast(project: str | None, labels: tuple[str, ...], statuses: tuple[str, ...], asc: bool,
             limit: int, kinds: tuple[str, ...] = ()) -> bool:
    """``runyard ls`` on a SQLite home through the standard library, as ``runyard ps`` is (importing
    SQLAlchemy alone costs more than the whole listing), and on PostgreSQL through psycopg alone;
    False when the full path must answer (a server, a database not at this code's schema, or
    records left by a dead writer to ingest first)."""
    from runyard.spool.rundir import target_key, waiting_for_catch_up
    from runyard.store.lite import LiteStore, PostgresListing

    settings = resolve()
    if settings.server or waiting_for_catch_up(settings.spool_dir, target_key(settings)):
        return False
    lite: LiteStore | PostgresListing | None = LiteStore.open(settings.db) or PostgresListing.open(settings.db)
    if lite is None:
        return False
    try:
        listed = lite.list_runs(project, labels, statuses, not asc, limit, kinds)
    finally:
        lite.close()
    _print_runs(listed)
    return True


def _print_runs(listed: Sequence[Any], extra: Sequence[str] = ()) -> None:
    from runyard.cli import columns as cols

    now = time.time()
    rows = []
    for r in listed:
        duration = r.duration(now)
        rows.append([str(r.number), r.name or "-", r.project, r.status.value, ",".join(r.labels) or "-",
                     _age(now - r.created_at), _age(duration) if duration is not None else "-",
                     *(cols.text(cols.value_of(r, c)) for c in extra)])
    headers = ["RUN", "NAME", "PROJECT", "STATUS", "LABELS", "CREATED", "DURATION", *extra]
    print(_table(*_with_kinds(headers, rows, [r.kind.value for r in listed])) if rows else "no runs match")


def _with_kinds(headers: list[str], rows: list[list[str]], kinds: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """The table with a KIND column after NAME when a run is not a script (a notebook, a JupyterLab),
    a script's cell empty; without one when all are scripts, so the everyday table stays as narrow."""
    if all(k == RunKind.SCRIPT.value for k in kinds):
        return headers, rows
    at = headers.index("NAME") + 1
    cells = ["" if k == RunKind.SCRIPT.value else k for k in kinds]
    return ([*headers[:at], "KIND", *headers[at:]],
            [[*row[:at], cell, *row[at:]] for row, cell in zip(rows, cells, strict=True)])


def _run_json(r: Any) -> dict[str, Any]:
    from dataclasses import asdict

    from runyard import redact

    data = asdict(r)
    data["status"] = r.status.value
    data["kind"] = r.kind.value
    return redact.run_data(data)  # the launch record's credentials masked (the store keeps them for the run)


# -- show -----------------------------------------------------------------------------------------

def show(ref: str, as_json: bool) -> int:
    api = _open()
    try:
        store = api.store
        r = store.get_run(ref)
        children = [c.number for c in store.children_of(r.number)]
        inputs = store.inputs_of(r.number)
        artifacts = store.list_artifacts(r.number)
        series = store.list_series(r.number)
        # Which agent holds (or held) a launched run; a server's store does not say.
        get_claim = getattr(store, "get_claim", None)
        claim = get_claim(r.number) if get_claim is not None else None
        if as_json:
            from dataclasses import asdict

            _print_json({**_run_json(r), "children": children, "inputs": [asdict(i) for i in inputs],
                         "artifacts": [asdict(a) for a in artifacts],
                         "metrics": [asdict(s) for s in series], "claim": asdict(claim) if claim else None})
            return 0
        from runyard import redact

        now = time.time()
        duration = r.duration(now)
        lines = [
            f"run {r.number}  {r.name or ''}".rstrip(),
            f"  id         {r.id}",
            f"  project    {r.project}",
            f"  kind       {r.kind.value}",
            f"  status     {r.status.value}" + (f" ({r.status_message})" if r.status_message else "")
            + (f", exit code {r.exit_code}" if r.exit_code is not None else ""),
            f"  created    {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(r.created_at))}",
            f"  duration   {_age(duration) if duration is not None else '-'}",
            f"  command    {' '.join(redact.argv(r.command or [])) or '-'}",
            *_template_line(r),
            f"  labels     {', '.join(r.labels) or '-'}",
            f"  git        {r.git_commit or '-'}" + (f" ({r.git_branch})" if r.git_branch else "")
            + (" + uncommitted diff" if r.git_diff_ref else ""),
            f"  snapshot   {r.snapshot_id or '-'}",
            *_claim_line(claim, r.status),
            f"  parent     {r.parent or '-'}",
            f"  children   {', '.join(map(str, children)) or '-'}",
        ]
        if r.config:
            lines.append("  params")
            lines += [f"    {k} = {v}" for k, v in sorted(r.config.items())]
        lines += _launch_environment(r.launch)
        if r.summary:
            lines.append("  summary")
            lines += [f"    {k} = {v}" for k, v in sorted(r.summary.items())]
        if inputs:
            lines.append("  inputs")
            lines += [f"    {i.mount or '-'} <- " + (f"run {i.source_run}:{i.source_path}" if i.source_run
                                                     else (i.source_path or "")) + f" (sha256 {i.sha256[:12]})"
                      for i in inputs]
        if artifacts:
            lines.append("  outputs")
            lines += [f"    {a.path}  {a.size:,} bytes" for a in artifacts]
        if r.notes:
            lines.append("  notes")
            lines += [f"    {line}" for line in r.notes.splitlines()]
        # Each line built here is one line: a control character or line break inside what the run
        # sent (its name, a key, a message) is escaped, never acted on by the terminal.
        print("\n".join(printable(line) for line in lines))
        return 0
    finally:
        api.close()


def _claim_line(claim: Any, status: RunStatus) -> list[str]:
    """Which agent holds the run (on a team's shared database, which machine runs it)."""
    if claim is None:
        return []
    stamp = "%Y-%m-%d %H:%M:%S"
    held = "held by" if status in (RunStatus.STARTING, RunStatus.RUNNING) else "ran on"
    when = [f"claimed {time.strftime(stamp, time.localtime(claim.claimed_at))}"]
    if claim.submitted_at is not None:
        when.append(f"started {time.strftime(stamp, time.localtime(claim.submitted_at))}")
    if claim.stop_requested_at is not None:
        when.append("stop requested" + (", signalled" if claim.stop_sent_at is not None else ", not yet signalled"))
    return [f"  agent      {held} agent {claim.agent} on {claim.host or 'an unknown host'} ({'; '.join(when)})"]


def _template_line(r: Any) -> list[str]:
    """The command as typed, when its params made it differ from the command that ran."""
    import shlex

    from runyard import redact

    launch = redact.launch(r.launch) or {}
    typed = launch.get("template")
    if typed is None or typed == launch.get("argv"):
        return []
    return [f"  template   {typed[0] if launch.get('shell') else shlex.join(typed)}  (a rerun substitutes params "
            "in it again)"]


def _launch_environment(launch: dict[str, Any] | None) -> list[str]:
    """What a launched run inherited from the shell that submitted it, and its --env."""
    from runyard import redact
    from runyard.exec.environment import describe

    launch = redact.launch(launch)
    if not launch:
        return []
    lines = []
    environment = launch.get("environment")
    if environment is not None:
        lines.append(f"  inherits   from the shell that launched it ({describe(environment)})")
        lines += [f"    {k}={v}" for k, v in sorted(environment.items())]
    if launch.get("env"):
        lines.append("  --env")
        lines += [f"    {k}={v}" for k, v in sorted(launch["env"].items())]
    return lines


# -- logs -----------------------------------------------------------------------------------------

#: What ``runyard logs --stream`` can pick: the command's two pipes and runyard's own lines.
STREAMS = ("stdout", "stderr", "system")
#: Pauses between attempts while the store or server cannot be reached during ``logs -f``.
RECONNECT_FIRST, RECONNECT_MAX = 0.2, 5.0


def _print_lines(lines: Sequence[Any], stream: str | None = None) -> None:
    """Every line on standard output, so ``runyard logs 2 | grep Warning`` finds what the run wrote
    to its stderr too; runyard's own lines carry a prefix. ``stream`` keeps only that stream."""
    out = sys.stdout
    for line in lines:
        if stream is not None and line.stream != stream:
            continue
        prefix = "[runyard] " if line.stream == "system" else ""
        out.write(f"{prefix}{printable(line.text, lines=True)}\n")
    out.flush()


def _tail(store: Any, number: int, count: int, stream: str | None) -> list[Any]:
    """The last ``count`` lines (of one stream: read from the start, as the store keeps no index by stream)."""
    if count == 0:
        return []
    if stream is None:
        return list(store.tail_logs(number, count))
    kept: list[Any] = []
    after = 0
    while batch := store.read_logs(number, after, 5000):
        kept = (kept + [line for line in batch if line.stream == stream])[-count:] if count else []
        after = batch[-1].id
    return kept


def logs(ref: str, follow: bool, tail: int | None, stream: str | None = None) -> int:
    if follow:
        return _follow(resolve(), ref, tail, stream)
    api = _open()
    try:
        r = api.store.get_run(ref)
        if tail is not None:
            _print_lines(_tail(api.store, r.number, tail, stream), stream)
            return 0
        after = 0
        while batch := api.store.read_logs(r.number, after, 5000):
            _print_lines(batch, stream)
            after = batch[-1].id
        return 0
    finally:
        api.close()


def _unreachable(error: BaseException) -> bool:
    """Whether ``error`` means the server or database cannot be reached now (worth waiting through)."""
    from runyard.errors import ServerError

    if isinstance(error, ServerError):
        return True
    module = type(error).__module__
    if module.startswith("sqlalchemy"):
        import sqlalchemy.exc

        return isinstance(error, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError)
    return False


def _follow(settings: Settings, ref: str, tail: int | None = None, stream: str | None = None) -> int:
    """Print the log as it grows until the run ends; returns the run's exit code.

    An outage of the server or database does not end it: it says "reconnecting" once on stderr,
    tries again with growing pauses (0.2 s doubling to 5 s), says "reconnected", and goes on after
    the last line it printed (lines are read by their id in the store, so none repeats or is lost).
    """
    from runyard.api import Api

    api = Api(settings)
    if api.remote:
        api.store.client.retries = 0  # type: ignore[attr-defined]  # this loop waits, and says so
    pause = RECONNECT_FIRST
    outage = False
    number: int | None = None
    after = 0
    started = tail is None
    try:
        store = api.store
        while True:
            try:
                if number is None:
                    number = store.resolve(ref)
                if not started:
                    first = _tail(store, number, tail or 0, stream)
                    _print_lines(first, stream)
                    after = first[-1].id if first else (_last_id(store, number) if tail == 0 else 0)
                    started = True
                run = store.get_run(number)
                batch = store.read_logs(number, after, 5000)
            except Exception as e:  # only an outage is waited through; the rest is raised
                if not _unreachable(e):
                    raise
                if not outage:
                    print(f"runyard: {_outage_words(e)}; reconnecting", file=sys.stderr, flush=True)
                    outage = True
                time.sleep(pause)
                pause = min(pause * 2, RECONNECT_MAX)
                continue
            if outage:
                print("runyard: reconnected", file=sys.stderr, flush=True)
                outage, pause = False, RECONNECT_FIRST
            if batch:
                _print_lines(batch, stream)
                after = batch[-1].id
                continue
            if run.status.value in TERMINAL:
                if run.status.value != "finished":
                    print(f"runyard: run {number} {run.status.value}"
                          + (f": {printable(run.status_message)}" if run.status_message else ""), file=sys.stderr)
                return run.exit_code if run.exit_code is not None and run.exit_code >= 0 else \
                    (0 if run.status.value == "finished" else 1)
            time.sleep(0.2)
    except KeyboardInterrupt:
        return 130
    finally:
        api.close()


def _last_id(store: Any, number: int) -> int:
    last = store.tail_logs(number, 1)
    return int(last[-1].id) if last else 0


def _outage_words(error: BaseException) -> str:
    text = str(getattr(error, "orig", None) or error).strip().splitlines()
    return text[0] if text else type(error).__name__


# -- stop -----------------------------------------------------------------------------------------

def stop(refs: list[str]) -> int:
    api = _open()
    try:
        runs = [api.store.get_run(ref) for ref in refs]  # every reference checked before anything stops
        for r in runs:
            print(printable(api.stop(r)))
        return 0
    finally:
        api.close()


# -- cp -------------------------------------------------------------------------------------------

def cp(source: str, dest: str) -> int:
    destination = Path(dest)
    into_directory = dest.endswith(("/", os.sep)) or destination.is_dir()  # Path drops the slash
    ref, sep, path = source.partition(":")
    if not sep or not ref:
        raise InvalidArgument(f"{source!r}: expected RUN:PATH, e.g. 62:outputs/model.pt or 62:checkpoints/")
    path = path.strip("/")
    api = _open()
    try:
        store = api.store
        r = store.get_run(ref)
        api.sync(runs=[r.id])  # what the run uploaded a moment ago may still be in its spool
        entries = store.list_artifacts(r.number)
        exact = [a for a in entries if a.path == path]
        under = [a for a in entries if not path or a.path.startswith(path + "/")]
        if not exact and not under:
            known = ", ".join(sorted({a.path.split("/")[0] for a in entries})[:10]) or "none"
            raise NotFound(f"run {r.number} has no artifact {path or '/'} (top-level artifacts: {known})")
        if exact:
            a = exact[0]
            name = a.path.rsplit("/", 1)[-1]
            if into_directory:
                target_dir, rel = destination, name
            else:
                target_dir, rel = destination.parent if str(destination.parent) else Path(), destination.name
            files = [(a, target_dir, rel)]
        else:
            files = [(a, destination, a.path[len(path):].lstrip("/") if path else a.path) for a in under]
        total = sum(a.size for a, _, _ in files)
        _copy(lambda a, root, rel: api.export(r, a, root, rel), files, total)
        print(f"copied {len(files)} file(s), {total:,} bytes, from run {r.number} to {destination}")
        return 0
    finally:
        api.close()


def _copy(export: Any, files: list[tuple[Any, Path, str]], total: int) -> None:
    from runyard.cli.transfer import transfer_bar

    with transfer_bar("copying") as advance:
        done = 0
        for a, root, rel in files:
            export(a, root, rel)
            done += a.size
            advance(done, total)


# -- rerun, label, note ---------------------------------------------------------------------------

def rerun(ref: str, params: Sequence[str], name: str | None, pip: Sequence[str], env: Sequence[str],
          timeout: str | None, mounts: Sequence[str], gpus: int | None) -> int:
    from runyard.exec import options
    from runyard.exec.control import Overrides

    changes = options.params(params)
    overrides = Overrides(pip=list(pip), env=_env_options(env), timeout=timeout, mounts=list(mounts), gpus=gpus)
    api = _open()
    try:
        parent = api.store.get_run(ref)
        number = api.rerun(parent, changes, name, overrides)
    finally:
        api.close()
    print(f"run {number} queued (a rerun of run {parent.number})")
    return 0


def label(ref: str, changes: list[str]) -> int:
    add = [c[1:] for c in changes if c.startswith("+")]
    remove = [c[1:] for c in changes if c.startswith("-")]
    bad = [c for c in changes if not c.startswith(("+", "-")) or len(c) < 2]
    if bad:
        raise InvalidArgument(f"label change {bad[0]!r}: write +name to add a label, -name to remove one")
    api = _open()
    try:
        r = api.store.set_labels(api.store.resolve(ref), add, remove)
        print(printable(f"run {r.number}: labels {', '.join(r.labels) or '(none)'}"))
        return 0
    finally:
        api.close()


def note(ref: str, text: str) -> int:
    api = _open()
    try:
        r = api.store.append_note(api.store.resolve(ref), text)
        print(f"run {r.number}: note added")
        return 0
    finally:
        api.close()
