"""What a launched run inherits from the shell that submitted it, and nothing else.

A run starts later, from the agent, and the agent may have been started by another shell with
another PATH and virtual environment. So ``runyard run`` records the variables named here from its
own environment (which programs, Python and libraries the command finds; who it runs as; its
locale), the launch carries them, and the supervisor builds the command's environment from them,
``--env``, and the variables runyard sets itself: nothing of the agent's environment reaches a
run. The lists are documented in ``runyard run --help`` and the README; a test keeps them in step.

PYTHONPATH is not inherited: a path into the working tree would have the run import the files as
they are now rather than its snapshot (``--env PYTHONPATH=.`` names the snapshot's root).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import PurePath

#: Which programs, Python, packages and libraries the command finds.
FINDING = ("PATH", "VIRTUAL_ENV", "CONDA_PREFIX", "CONDA_DEFAULT_ENV", "PYENV_VERSION", "PYENV_ROOT",
           "LD_LIBRARY_PATH")
#: Who the command runs as, and where its home and temporary files are.
IDENTITY = ("HOME", "USER", "LOGNAME", "TMPDIR")
#: How it writes text, numbers and times; with every variable starting with ``LOCALE_PREFIX``.
LOCALE = ("LANG", "LANGUAGE", "TZ")
LOCALE_PREFIX = "LC_"
INHERITED = FINDING + IDENTITY + LOCALE


def inherited(environ: Mapping[str, str]) -> dict[str, str]:
    """The variables of ``environ`` a run launched from it inherits."""
    return {key: environ[key] for key in sorted(environ)
            if key in INHERITED or key.startswith(LOCALE_PREFIX)}


def command_environment(inherited: Mapping[str, str], env: Mapping[str, str],
                        runyard: Mapping[str, str]) -> dict[str, str]:
    """The command's environment: what it inherited, then ``--env`` over it, then runyard's own."""
    out = dict(inherited)
    out.setdefault("PATH", os.defpath)  # as a shell does when none is set
    out.update(env)
    out.update(runyard)
    return out


def describe(environment: Mapping[str, str]) -> str:
    """The Python environment active in ``environment``, for people: ``virtualenv /x``."""
    parts = []
    if environment.get("VIRTUAL_ENV"):
        parts.append(f"virtualenv {environment['VIRTUAL_ENV']}")
    if environment.get("CONDA_PREFIX"):
        name = environment.get("CONDA_DEFAULT_ENV") or PurePath(environment["CONDA_PREFIX"]).name
        parts.append(f"conda env {name} ({environment['CONDA_PREFIX']})")
    if environment.get("PYENV_VERSION"):
        parts.append(f"pyenv {environment['PYENV_VERSION']}")
    return ", ".join(parts) or "no virtualenv or conda env active"
