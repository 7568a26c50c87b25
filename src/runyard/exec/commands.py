"""Reading a run's command before it runs: which program it starts, and which Python script.

``runyard run -- python train.py`` whose ``train.py`` is not in the snapshot would fail minutes
later, when the run starts; ``script_of`` finds the script so that submission can refuse it at
once. Only commands whose meaning is certain are read: argv, or a shell line of plain words.
"""

from __future__ import annotations

import posixpath
import re
import shlex
from collections.abc import Sequence

#: ``python``, ``python3``, ``python3.12``, under any directory.
_PYTHON = re.compile(r"^python(\d+(\.\d+)?)?$")
#: Characters that give a shell line a meaning beyond words: such a line is not read.
_SHELL_SYNTAX = set(";&|<>()$`*?[]{}~#!\n\\")


def words_of(command: Sequence[str], shell: bool) -> list[str] | None:
    """The argv a command runs: itself, or a shell line's words when it is plain words (no
    operators, expansions, redirections or leading variable assignments); None otherwise."""
    if not shell:
        return list(command)
    line = command[0] if command else ""
    if _SHELL_SYNTAX & set(line):
        return None
    try:
        words = shlex.split(line)
    except ValueError:
        return None
    return words if words and "=" not in words[0] else None


def script_of(argv: Sequence[str]) -> str | None:
    """The script ``python [OPTIONS] FILE ...`` runs, normalised (``./a/../b.py`` -> ``b.py``); None for
    ``-m``, ``-c``, stdin or anything that is not Python."""
    if not argv or not _PYTHON.match(posixpath.basename(argv[0])):
        return None
    rest = list(argv[1:])
    while rest:
        arg = rest.pop(0)
        if arg == "--":
            return posixpath.normpath(rest[0]) if rest else None
        if arg == "-" or arg in ("--help", "--version"):
            return None
        if arg == "--check-hash-based-pycs":
            rest = rest[1:]
            continue
        if arg.startswith("--"):
            continue
        if arg.startswith("-"):
            for i, flag in enumerate(arg[1:]):
                if flag in "cmhV":
                    return None  # code, a module, or no script at all
                if flag in "WX":  # -W ignore, -Wignore, -X dev: the rest of the word or the next is its value
                    if i == len(arg) - 2:
                        rest = rest[1:]
                    break
            continue
        return posixpath.normpath(arg)
    return None
