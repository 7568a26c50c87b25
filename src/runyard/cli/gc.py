"""``runyard gc`` (reclaim disk) and ``runyard rm`` (delete runs): the words and questions; the work
is ``runyard.exec.reclaim``."""

from __future__ import annotations

import re
import sys
import time
from typing import Any

from runyard.errors import InvalidArgument

_UNITS = ("KiB", "MiB", "GiB", "TiB")


def _size(n: int) -> str:
    if n < 1024:
        return f"{n:,} bytes"
    value = float(n)
    for unit in _UNITS:
        value /= 1024
        if value < 1024 or unit == _UNITS[-1]:
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")


class _Progress:
    """One line on stderr, rewritten at most five times a second, only on a terminal."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.shown = time.monotonic() + 0.3  # quick work shows no progress at all
        self.width = 0

    def __call__(self, text: str) -> None:
        now = time.monotonic()
        if not self.tty or now - self.shown < 0.2:
            return
        self.shown = now
        sys.stderr.write("\r" + text.ljust(self.width))
        sys.stderr.flush()
        self.width = len(text)

    def done(self) -> None:
        if self.tty and self.width:
            sys.stderr.write("\r" + " " * self.width + "\r")
            sys.stderr.flush()


_AGE = re.compile(r"(?:(\d+(?:\.\d+)?)d)?(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?")


def _age(text: str) -> float:
    """Seconds in ``30d``, ``12h``, ``1d12h``, ``90m`` or ``3600`` (days count, unlike --timeout's form)."""
    m = _AGE.fullmatch(text.strip())
    if not text.strip() or m is None or not any(m.groups()):
        raise InvalidArgument(f"--runs-older-than {text!r}: expected an age such as 30d, 12h, 1d12h or 90m")
    days, hours, minutes, seconds = (float(g) if g else 0.0 for g in m.groups())
    return days * 86400 + hours * 3600 + minutes * 60 + seconds


def _local_api() -> Any:
    from runyard.api import Api

    api = Api()
    if api.remote:
        api.close()
        raise InvalidArgument("this works on the store on this machine; with RUNYARD_SERVER set, run it on the "
                              "server's machine without RUNYARD_SERVER")
    return api


def gc(env_days: float, runs_older_than: str | None, all_finished: bool, dry_run: bool, as_json: bool) -> int:
    from runyard.exec import reclaim

    if runs_older_than is not None and all_finished:
        raise InvalidArgument("--runs-older-than and --all-finished: give one of them")
    cutoff = time.time() - _age(runs_older_than) if runs_older_than is not None else None
    api = _local_api()
    progress = _Progress()
    try:
        report = reclaim.collect(api.store, api.artifacts, api.settings.home, env_days=env_days,
                                 runs_ended_before=cutoff, run_directories=runs_older_than is not None or all_finished,
                                 dry_run=dry_run, progress=progress)
    finally:
        progress.done()
        api.close()
    if as_json:
        from runyard.cli.runs import _print_json

        _print_json(report.as_dict())
        return 0
    rows = [("content", report.content, "unreferenced blobs"),
            ("environments", report.environments, f"package environments unused for {env_days:g} days"),
            ("run directories", report.run_directories, "directories of finished runs"),
            ("uploads", report.uploads, "uploads begun over an hour before any active run and never finished")]
    print("would free (dry run, nothing deleted):" if dry_run else "freed:")
    for name, kind, what in rows:
        print(f"  {name:<16} {kind.count:>6,} {_size(kind.bytes):>12}   {what}")
    print(f"  {'total':<16} {'':>6} {_size(report.total_bytes):>12}")
    if not report.run_directories.count and runs_older_than is None and not all_finished:
        print("run directories are kept unless --runs-older-than DURATION or --all-finished is given")
    return 0


def rm(refs: list[str], yes: bool) -> int:
    from runyard.exec import reclaim

    api = _local_api()
    try:
        runs = [api.store.get_run(ref) for ref in refs]  # every reference checked before anything goes
        active = [r for r in runs if r.status in reclaim.ACTIVE]
        if active:
            numbers = " ".join(str(r.number) for r in active)
            print(f"runyard: error: run {numbers} {'is' if len(active) == 1 else 'are'} "
                  f"{'/'.join(sorted({r.status.value for r in active}))}; stop {'it' if len(active) == 1 else 'them'} "
                  f"first: runyard stop {numbers}", file=sys.stderr)
            return 2
        unique = list({r.number: r for r in runs}.values())
        registered = api.store.registered_runs([r.number for r in unique])
        if registered:  # a model version is an immutable pointer to its run's artifacts
            said = "; ".join(f"run {n} is model:{', model:'.join(v)}" for n, v in sorted(registered.items()))
            print(f"runyard: error: {said}; a registered run is kept (runyard model ls shows the registry)",
                  file=sys.stderr)
            return 2
        listed = ", ".join(f"{r.number}" + (f" ({r.name})" if r.name else "") for r in unique)
        if not yes:
            if not sys.stdin.isatty():
                raise InvalidArgument(f"rm deletes run{'s' if len(unique) > 1 else ''} {listed} for good and asks "
                                      "first; without a terminal to ask on, pass --yes")
            import click

            if not click.confirm(f"Delete run{'s' if len(unique) > 1 else ''} {listed} (record, metrics, logs, "
                                 "directory) and the artifacts no other run has?", default=False, err=True):
                print("nothing deleted", file=sys.stderr)
                return 1
        progress = _Progress()
        try:
            report = reclaim.delete_runs(api.store, api.artifacts, api.settings.home, api.settings.spool_dir, unique,
                                         progress)
        finally:
            progress.done()
    finally:
        api.close()
    print(f"deleted run{'s' if len(report.runs) != 1 else ''} {', '.join(map(str, report.runs)) or '(none)'}; "
          f"freed {_size(report.content.bytes + report.run_directories.bytes)} "
          f"({report.content.count:,} blob{'s' if report.content.count != 1 else ''}, "
          f"{report.run_directories.count:,} run director{'ies' if report.run_directories.count != 1 else 'y'})")
    return 0
