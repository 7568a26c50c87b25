"""Params in the command: ``{KEY}`` is replaced by a param's value, ``{params}`` by all of them.

    runyard run --param lr=0.1 -- python train.py --lr {lr}        ->  python train.py --lr 0.1
    runyard run --param lr=0.1 --param epochs=3 -- python train.py {params}
                                                                   ->  python train.py --epochs=3 --lr=0.1

The command as typed is the run's template (kept in its launch record), so a rerun with other params
substitutes again. Only ``{NAME}`` with NAME a name as params have is a placeholder, and not right
after ``$`` (the shell's ``${HOME}``); any other brace (``{1..3}``, ``{'a': 1}``) stays as written, and a
command without placeholders runs exactly as typed. In a command with placeholders, ``{{`` and ``}}``
are a literal ``{`` and ``}``; in a shell line a placeholder must stand outside quotes.
``{params}`` gives one ``--KEY=VALUE`` per param, sorted by KEY (an order every store keeps).
In a shell line every value is replaced by one shell word (``shlex.quote``), never shell syntax.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Mapping, Sequence

from runyard.errors import InvalidArgument

#: ``{{``, ``}}``, or a placeholder ``{NAME}`` not preceded by ``$``.
_TOKEN = re.compile(r"\{\{|\}\}|(?<!\$)\{([A-Za-z_][A-Za-z0-9_]*)\}")
ALL = "params"


def placeholders(command: Sequence[str]) -> list[str]:
    """The param names a command refers to, in order of appearance (``params`` for all of them)."""
    return [m.group(1) for part in command for m in _TOKEN.finditer(part) if m.group(1)]


def substitute(command: Sequence[str], shell: bool, params: Mapping[str, str]) -> list[str]:
    """The command to run: ``command`` (argv entries, or one shell line when ``shell``) with its
    placeholders replaced by ``params``. Raises InvalidArgument for a placeholder naming no param."""
    names = placeholders(command)
    if not names:
        return list(command)  # no placeholder: not a template, so braces ({{, }}) stay as typed
    if shell:
        for part in command:
            _refuse_quoted(part)
    unknown = [name for name in names if name != ALL and name not in params]
    if unknown:
        given = ", ".join(sorted(params)) or "none (no --param given)"
        raise InvalidArgument(f"the command refers to {{{unknown[0]}}}, which is no param; params given: {given} "
                              "(write {{ and }} for a literal { and })")
    flags = [f"--{key}={params[key]}" for key in sorted(params)]
    if shell:
        return [_replace(part, params, shlex.quote, " ".join(shlex.quote(f) for f in flags))
                for part in command]
    out: list[str] = []
    for part in command:
        if part == "{" + ALL + "}":
            out += flags  # one argv entry per param, as argparse expects them
            continue
        if any(m.group(1) == ALL for m in _TOKEN.finditer(part)):
            raise InvalidArgument(f"{part!r}: {{params}} stands for several argv entries, so it must be an entry "
                                  "of its own (e.g. -- python train.py {params}); use {KEY} inside an entry")
        out.append(_replace(part, params, str, ""))
    return out


def _refuse_quoted(line: str) -> None:
    """A placeholder inside quotes of a shell line would put its value, quoted once more, inside
    those quotes: in "..." a value such as $(id) would run. Refuse it; outside quotes it is one word."""
    quote: str | None = None
    escaped = False
    spans = {m.start(): m.group(0) for m in _TOKEN.finditer(line) if m.group(1)}
    for i, char in enumerate(line):
        if quote is not None and i in spans:
            raise InvalidArgument(
                f"{spans[i]} is inside quotes in the shell line {line!r}: a param's value is put in as one "
                f"shell word, quoted, so write it outside quotes (--name {spans[i]}, not --name \"{spans[i]}\")")
        if escaped:
            escaped = False
        elif char == "\\" and quote != "'":
            escaped = True
        elif quote is None and char in "'\"":
            quote = char
        elif char == quote:
            quote = None


def _replace(part: str, params: Mapping[str, str], quote: Callable[[str], str], every: str) -> str:
    def one(m: re.Match[str]) -> str:
        token, name = m.group(0), m.group(1)
        if not name:
            return token[0]  # {{ -> {, }} -> }
        if name == ALL:
            return every
        return quote(params[name])

    return _TOKEN.sub(one, part)
