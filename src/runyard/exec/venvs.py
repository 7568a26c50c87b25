"""Per-run package environments for ``--pip`` and ``--requirements``, built once and cached.

One virtual environment per distinct requirement set (and Python version), under
``$RUNYARD_HOME/envs/<key>``, built with uv when it is installed, else with venv and pip, under a
file lock so that runs needing the same set build it once. The set is normalised first (names as
PEP 503 compares them, specifiers sorted, comments dropped), so ``--pip a --pip b`` and a
requirements file listing ``b`` and ``a`` share one environment. It is built with the Python the
command would have run (found on the PATH of the shell that submitted it) and layered over it: a
``.pth`` file hands that Python's site directories to ``site.addsitedir`` after the environment's
own, so the run sees everything it had, however it was installed (an editable install is itself a
``.pth`` file there), plus what it asked for.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

READY = ".runyard-ready"
#: Named to sort last: ``site`` reads .pth files in name order, so whatever the environment's own
#: packages add to the path comes before the layered-over directories.
LAYER_FILE = "zz-runyard-layer.pth"
#: Part of every key: environments built before a change of layout are not reused.
LAYOUT = 2
#: Asked of the Python a run would find: the site directories it reads, in the order it reads them
#: (its user site first, when enabled there; ``site_directories`` is the same in this process).
SITE_QUERY = (
    "import json, site, sysconfig; p = sysconfig.get_paths(); "
    "u = [site.getusersitepackages()] if site.ENABLE_USER_SITE else []; "
    "print(json.dumps(list(dict.fromkeys(u + [p['purelib'], p['platlib']]))))"
)


class InstallFailed(Exception):
    """The installer failed; its output has been logged."""


def site_directories() -> list[str]:
    """This Python's site directories, as ``SITE_QUERY`` answers for another."""
    import site
    import sysconfig

    paths = sysconfig.get_paths()
    user = [site.getusersitepackages()] if site.ENABLE_USER_SITE else []
    return list(dict.fromkeys([*user, paths["purelib"], paths["platlib"]]))


def layer_line(directories: Sequence[str]) -> str:
    """The .pth line layering an environment over ``directories``: a line starting with ``import``
    is run, and ``site.addsitedir`` also reads each directory's own .pth files (a bare path line would
    not, and an editable install, a .pth file, would be missing)."""
    calls = "; ".join(f"site.addsitedir({d!r})" for d in directories)
    return f"import site; {calls}\n" if calls else "\n"


def requirement_set(pip: Sequence[str], requirements: str | None) -> list[str]:
    """The requirements asked for, normalised: PEP 503 names, extras and specifiers sorted, comments
    and blank lines dropped, sorted and deduplicated. What ``packaging`` cannot parse (an installer
    line such as ``-c constraints.txt``) is kept as written, whitespace collapsed."""
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    text = (requirements or "").replace("\\\n", "")  # pip joins continued lines
    from runyard.exec.options import uncommented

    entries = [*pip, *(uncommented(line) for line in text.splitlines())]
    out = set()
    for entry in (" ".join(e.split()) for e in entries):
        if not entry:
            continue
        try:
            req = Requirement(entry)
        except InvalidRequirement:
            out.add(entry)
            continue
        extras = ",".join(sorted(canonicalize_name(e) for e in req.extras))
        form = canonicalize_name(req.name) + (f"[{extras}]" if extras else "")
        form += f" @ {req.url}" if req.url else ",".join(sorted(str(s) for s in req.specifier))
        out.add(form + (f" ; {req.marker}" if req.marker else ""))
    return sorted(out)


def env_key(pip: Sequence[str], requirements: str | None, python: str) -> str:
    text = json.dumps({"requirements": requirement_set(pip, requirements), "python": python, "layout": LAYOUT})
    return hashlib.sha256(text.encode()).hexdigest()[:16]


#: Runs one installer step, logging its output; returns its exit code (the supervisor's makes a
#: stop request end it).
Runner = Callable[[list[str], Callable[[str], None]], int]


def _run(argv: list[str], log: Callable[[str], None]) -> int:
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    assert proc.stdout is not None
    for raw in proc.stdout:
        log(raw.decode("utf-8", "replace").rstrip("\n"))
    return proc.wait()


def _site_packages(env: Path) -> Path:
    found = sorted(env.glob("lib/python*/site-packages"))
    if not found:
        raise InstallFailed(f"no site-packages in {env}")
    return found[0]


#: Shared locks on the environments this process uses, held until it exits (see ``in_use``).
_IN_USE: list[IO[str]] = []


def _hold_in_use(root: Path, key: str) -> None:
    """Mark the environment as used by this process (a supervisor: for the whole of its run), taken
    under the build lock so that `runyard gc` cannot remove it between the check and the run."""
    marker = (root / f"{key}.use").open("a")  # close-on-exec: the command does not inherit it
    fcntl.flock(marker, fcntl.LOCK_SH)
    _IN_USE.append(marker)


def in_use(root: Path, key: str) -> bool:
    """Whether some process (a run's supervisor) uses the environment now."""
    try:
        with (root / f"{key}.use").open("a") as marker:
            try:
                fcntl.flock(marker, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(marker, fcntl.LOCK_UN)
            return False
    except OSError:
        return False


def ensure_env(home: Path, pip: Sequence[str], requirements: str | None, python: str,
               layered_over: Sequence[str], log: Callable[[str], None], runner: Runner = _run) -> tuple[Path, bool]:
    """The environment's directory, and whether this call built it (False: reused)."""

    def step(argv: list[str]) -> int:
        log("$ " + " ".join(argv))
        return runner(argv, log)

    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    key = env_key(pip, requirements, python)
    root = home / "envs"
    root.mkdir(parents=True, exist_ok=True)
    env = root / key
    with (root / f"{key}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _hold_in_use(root, key)
        if (env / READY).exists():
            (env / READY).touch()  # the last use, which `runyard gc --env-days` reads
            log(f"reusing the package environment {env} (python {version})")
            return env, False
        if env.exists():
            shutil.rmtree(env)  # a build that died half way
        log(f"building a package environment in {env} for {', '.join(requirement_set(pip, requirements))}")
        uv = shutil.which("uv")
        if uv:
            code = step([uv, "venv", "--quiet", "--python", python, str(env)])
        else:
            code = step([python, "-m", "venv", str(env)])
        if code != 0:
            raise InstallFailed(f"creating the environment failed with exit code {code}")
        # Layer over the submitting environment: its packages come after the environment's own.
        (_site_packages(env) / LAYER_FILE).write_text(layer_line(layered_over))
        args = list(pip)
        if requirements:
            req = env / "requirements.txt"
            req.write_text(requirements)
            args += ["-r", str(req)]
        if uv:
            install = [uv, "pip", "install", "--python", str(env / "bin" / "python"), *args]
        else:
            install = [str(env / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check",
                       "--no-input", *args]
        code = step(install)
        if code != 0:
            raise InstallFailed(f"installing {' '.join(pip) or 'the requirements'} failed with exit code {code}")
        (env / READY).write_text("ok\n")
        return env, True
