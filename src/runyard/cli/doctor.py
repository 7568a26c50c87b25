"""``runyard doctor``: what runyard sees of this machine, and whether its store works.

The exit code is 0 exactly when the configured store (database and artifact store) works: that is
what every other command needs. PostgreSQL, Ray and GPUs are reported, not required.
"""

from __future__ import annotations

import importlib.metadata
import platform
import shutil
import socket
import subprocess
import sys
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Literal

import orjson

from runyard._version import __version__
from runyard.config import Settings, resolve
from runyard.errors import RunyardError

if TYPE_CHECKING:
    from runyard.store.artifacts import ArtifactStore

Status = Literal["ok", "fail", "warn", "info"]
_MARK = {"ok": "[green]✓[/green]", "fail": "[red]✗[/red]", "warn": "[yellow]![/yellow]", "info": "[dim]·[/dim]"}


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    #: Whether a failure of this check makes the store unusable (and doctor exit 1).
    required: bool = False


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def check_home(settings: Settings) -> Check:
    home = settings.home
    detail = f"{home} (from {settings.home_source})"
    if home.exists() and not home.is_dir():
        return Check("home", "fail", f"{detail} exists and is not a directory", required=True)
    if home.is_dir() and home.stat().st_mode & 0o077:
        return Check("home", "warn", f"{detail} can be read by other users of this machine (mode "
                     f"{home.stat().st_mode & 0o777:o}): they can read every run's records, code and outputs; "
                     f"`chmod 700 {home}` keeps them out", required=False)
    return Check("home", "ok", detail if home.exists() else f"{detail}; created on first use", required=True)


def check_credential(settings: Settings) -> Check:
    """The home's local credential (``runyard.credential``): absent, usable (0600, the owner's), or refused."""
    from runyard.credential import describe

    usable, detail = describe(settings.home)
    return Check("credential", "ok" if usable else "fail", detail)


def check_store(settings: Settings) -> list[Check]:
    from runyard.store.engine import masked
    from runyard.store.home import open_store

    where = masked(settings.db)
    try:
        opened = open_store(settings)
    except RunyardError as e:
        return [Check("database", "fail", " ".join(str(e).split()), required=True)]
    try:
        from runyard.store.migrate import schema_state

        state = schema_state(opened.store.engine)
        note = f", upgraded from {opened.migrated[0] or '(empty)'}" if opened.migrated else ""
        checks = [Check("database", "ok", f"{where} ({opened.store.dialect}), schema {state.current}{note}",
                        required=True)]
        checks.append(check_artifacts(settings, opened.artifacts))
        return checks
    finally:
        opened.close()


def check_artifacts(settings: Settings, artifacts: ArtifactStore) -> Check:
    """The artifact backend in one line: where it is, and that a probe blob goes in and comes back."""
    if settings.artifacts.startswith("s3://"):
        where = f"s3 {settings.artifacts} at {settings.s3_endpoint or 'AWS'}"
    else:
        where = f"disk {settings.artifacts}"
    try:
        blob = artifacts.put_bytes(b"runyard doctor probe\n")
        if artifacts.read_bytes(blob.content_ref) != b"runyard doctor probe\n":
            raise RunyardError("a probe blob read back differently")
    except (RunyardError, OSError) as e:
        # An S3 error names the location and endpoint already: say only what is wrong.
        detail = " ".join(str(e).split())
        return Check("artifacts", "fail", detail if where.startswith("s3") else f"{where}: {detail}", required=True)
    return Check("artifacts", "ok", f"{where} ({'reachable, ' if where.startswith('s3') else ''}writable)",
                 required=True)


def check_spool(settings: Settings) -> list[Check]:
    """Room on the spool's disk, runs whose spool waits for ingest, and records set aside."""
    import os

    from runyard.ingest import quarantine
    from runyard.spool.rundir import RETIRED, run_dirs

    spool = settings.spool_dir
    checks = []
    try:
        stats = os.statvfs(spool if spool.exists() else settings.home if settings.home.exists() else "/")
        free = stats.f_bavail * stats.f_frsize
        total = stats.f_blocks * stats.f_frsize or 1
        status: Status = "ok" if free >= 1 << 30 and free / total >= 0.05 else "warn"
        note = "" if status == "ok" else "; when it fills, runs hold records in memory (queue_limit), then lose them"
        checks.append(Check("spool disk", status, f"{free / (1 << 30):.1f} GiB free of {total / (1 << 30):.1f} GiB "
                                                  f"at {spool}{note}"))
    except OSError as e:
        checks.append(Check("spool disk", "warn", f"{spool}: {e.strerror or e}"))
    active = len(run_dirs(spool))
    retired = sum(1 for _ in (spool / RETIRED).iterdir()) if (spool / RETIRED).is_dir() else 0
    checks.append(Check("spool", "info", f"{active} run(s) not yet retired, {retired} retired (spool/{RETIRED})"))
    held = quarantine.listing(spool)
    if held:
        last = held[-1]
        checks.append(Check("quarantine", "warn", f"{len(held)} record(s) the store refused are set aside in "
                                                  f"{spool / quarantine.DIR}; the last, of run {last.run_id}: "
                                                  f"{last.reason}"))
    return checks


def check_postgres(settings: Settings) -> Check:
    driver = _version("psycopg")
    if settings.db.startswith("postgresql"):
        if not driver:
            return Check("postgresql", "fail", "configured but the driver is missing: pip install 'runyard[postgres]'")
        return Check("postgresql", "info", f"configured as the database (psycopg {driver}); see the database check")
    if not driver:
        return Check("postgresql", "info", "driver not installed: pip install 'runyard[postgres]'")
    return Check("postgresql", "info", f"driver psycopg {driver} installed; not configured (db is SQLite)")


def _tcp_reachable(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def check_ray(settings: Settings) -> Check:
    version = _version("ray")
    address = settings.ray
    if version is None:
        if address is not None:
            return Check("ray", "warn", f"not installed, so the cluster at {address} (RUNYARD_RAY) is not "
                                        "used: pip install ray")
        return Check("ray", "info", "not installed: runs go to a Ray cluster (--on ray) with "
                                    "pip install 'runyard[ray]'")
    if address is None:
        return Check("ray", "info", f"ray {version} installed; no cluster configured (set RUNYARD_RAY)")
    if address.startswith(("http://", "https://")):
        return _ray_cluster(settings, version)
    if address == "auto":
        return Check("ray", "info", f"ray {version} installed; cluster address 'auto' is resolved by Ray")
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if _tcp_reachable(host, int(port)):
        return Check("ray", "ok", f"ray {version}; cluster at {address} is reachable")
    return Check("ray", "warn", f"ray {version}; cluster at {address} is not reachable")


def _ray_cluster(settings: Settings, version: str) -> Check:
    """What the cluster at the ``ray`` setting offers runs, and what runs on it still need."""
    from runyard.errors import ConfigError
    from runyard.exec.ray import RayExecutor

    try:
        machine = RayExecutor(settings).machine()
    except ConfigError as e:
        return Check("ray", "warn", f"ray {version}; {e}")
    offers = (f"{machine.gpus} GPU(s), {machine.cpus} CPU cores, {machine.memory / (1 << 30):.1f} GiB of memory")
    if not settings.node_server:
        return Check("ray", "warn", f"ray {version}; cluster at {settings.ray}: {offers}; runs cannot go there until "
                                    "node_server (RUNYARD_NODE_SERVER) names this runyard server as the nodes reach it")
    return Check("ray", "ok", f"ray {version}; cluster at {settings.ray}: {offers}; its runs ship to "
                              f"{settings.node_server}")


def check_gpu() -> Check:
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            count = pynvml.nvmlDeviceGetCount()
            names = [pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(i)) for i in range(count)]
        finally:
            pynvml.nvmlShutdown()
        if count:
            return Check("gpu", "ok", f"{count} GPU(s) through NVML: {', '.join(map(str, names))}")
    except Exception:  # noqa: BLE001, S110 - no NVML, or no driver: fall through to nvidia-smi
        pass
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=5, check=False)
            gpus = [line for line in out.stdout.splitlines() if line.startswith("GPU ")]
            if gpus:
                return Check("gpu", "ok", f"{len(gpus)} GPU(s) through nvidia-smi")
        except (OSError, subprocess.TimeoutExpired):
            pass
    return Check("gpu", "info", "no GPU found (runs use the CPU)")


def check_versions() -> Check:
    parts = [f"runyard {__version__}", f"python {platform.python_version()}"]
    for dist in ("sqlalchemy", "alembic", "numpy", "psycopg"):
        version = _version(dist)
        if version:
            parts.append(f"{dist} {version}")
    return Check("versions", "info", ", ".join(parts))


def gather(settings: Settings) -> list[Check]:
    home = check_home(settings)
    checks = [home, Check("config", "info", _config_files(settings))]
    if home.status != "fail":
        checks.append(check_credential(settings))
        checks += check_store(settings)
        checks += check_spool(settings)
    checks += [check_versions(), check_postgres(settings), check_ray(settings), check_gpu()]
    return checks


def _config_files(settings: Settings) -> str:
    home_file = settings.home / "config.toml"
    files = [str(home_file) if home_file.is_file() else f"{home_file} (absent)"]
    files.append(str(settings.project_file) if settings.project_file else "no project runyard.toml")
    return "; ".join(files)


def run(as_json: bool) -> int:
    try:
        settings = resolve()
    except RunyardError as e:
        checks = [Check("config", "fail", str(e), required=True)]
    else:
        checks = gather(settings)
    healthy = not any(c.required and c.status == "fail" for c in checks)
    if as_json:
        doc = {"ok": healthy, "checks": [asdict(c) for c in checks]}
        sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(box=None, show_header=False, pad_edge=False)
        table.add_column(no_wrap=True)
        table.add_column(style="bold", no_wrap=True)
        table.add_column(overflow="fold")
        from rich.markup import escape

        from runyard.cli.printable import printable

        for c in checks:  # a detail may quote stored text (a quarantined record's reason)
            table.add_row(_MARK[c.status], c.name, escape(printable(c.detail, lines=True)))
        console = Console()
        console.print(table)
        console.print("[green]the store works[/green]" if healthy else "[red]the store does not work[/red]")
    return 0 if healthy else 1
