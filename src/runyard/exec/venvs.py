"""Per-run package environments for ``--pip`` and ``--requirements``, built once and cached.

One virtual environment per distinct requirement set (and Python version), under
``$RUNYARD_HOME/envs/<key>``, built with uv when it is installed, else with venv and pip, under a
file lock so that runs needing the same set build it once. It is built with the Python the command
would have run (found on the PATH of the shell that submitted it) and layered over it: a ``.pth``
file adds that Python's site-packages after its own, so the run sees everything it had plus what it
asked for.
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

READY = ".runyard-ready"


class InstallFailed(Exception):
    """The installer failed; its output has been logged."""


def env_key(pip: Sequence[str], requirements: str | None, python: str) -> str:
    text = json.dumps({"pip": sorted(pip), "requirements": requirements or "", "python": python})
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _run(argv: list[str], log: Callable[[str], None]) -> int:
    log("$ " + " ".join(argv))
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


def ensure_env(home: Path, pip: Sequence[str], requirements: str | None, python: str,
               layered_over: Sequence[str], log: Callable[[str], None]) -> tuple[Path, bool]:
    """The environment's directory, and whether this call built it (False: reused)."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    key = env_key(pip, requirements, python)
    root = home / "envs"
    root.mkdir(parents=True, exist_ok=True)
    env = root / key
    with (root / f"{key}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (env / READY).exists():
            (env / READY).touch()  # the last use, which `runyard gc --env-days` reads
            log(f"reusing the package environment {env} (python {version})")
            return env, False
        if env.exists():
            shutil.rmtree(env)  # a build that died half way
        log(f"building a package environment in {env}")
        uv = shutil.which("uv")
        if uv:
            code = _run([uv, "venv", "--quiet", "--python", python, str(env)], log)
        else:
            code = _run([python, "-m", "venv", str(env)], log)
        if code != 0:
            raise InstallFailed(f"creating the environment failed with exit code {code}")
        # Layer over the submitting environment: its packages come after the environment's own.
        (_site_packages(env) / "runyard-layer.pth").write_text("\n".join(layered_over) + "\n")
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
        code = _run(install, log)
        if code != 0:
            raise InstallFailed(f"installing {' '.join(pip) or 'the requirements'} failed with exit code {code}")
        (env / READY).write_text("ok\n")
        return env, True
