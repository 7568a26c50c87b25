"""The ``%%runyard`` cell magic and the ``%runyard`` line magic (``%load_ext runyard``).

    %%runyard run --gpus 1 --pip scikit-image --name unet
    ...the cell...                 -> experiments/model_001.py, launched as a run; a live widget

    %runyard ls                    any `runyard` command, run in the kernel: ls, ps, logs 3, stop 3...
    %runyard watch 3               the live widget for any run
    %runyard cp 3:outputs/ck/ ./ck brings a run's files back to this machine

``run`` takes exactly the options of ``runyard run``: they go through the same click command and
the same submission, so they are checked, and refused, with the same words. The cell is the
command: it is written, as plain Python (IPython syntax converted), to the next free
``experiments/model_NNN.py`` (created with O_EXCL, so two launches, from two kernels too, never
share a number) and run by ``python experiments/model_NNN.py`` on a snapshot of the project.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class, no_var_expand

#: Where cells are written, under the notebook's working directory.
EXPERIMENTS = "experiments"
_MODEL = re.compile(r"^model_(\d+)\.py$")
#: Stands for the cell's script while the options alone are checked.
_PLACEHOLDER = ("python", "CELL.py")
#: Ends the line %%runyard run adds above the cell.
PREAMBLE_MARK = "# added by %%runyard run: imports as in the notebook"

USAGE = """\
%%runyard run [OPTIONS]     (first line of a cell) launch the cell as a run; the options of
                            `runyard run`, e.g. --gpus 1 --pip scikit-image --name unet
%runyard watch RUN          the live widget of a run
%runyard cp RUN:PATH DEST   copy a run's files here, e.g. %runyard cp 3:outputs/checkpoints/ ./ck
%runyard COMMAND ...        any other runyard command: ls, ps, show 3, logs 3, stop 3, --help"""


#: What a launch imports: loaded with the extension, so that the first launch returns as fast as the
#: next ones (about a quarter of a second otherwise).
_LAUNCH_MODULES = ("runyard.cli.main", "runyard.cli.runs", "runyard.cli.transfer", "runyard.exec.submit",
                   "runyard.exec.snapshot", "runyard.exec.commands", "runyard.exec.executors",
                   "runyard.store.lite", "runyard.store.artifacts", "runyard.sdk.agent_launch", "orjson")


def load_ipython_extension(ipython: Any) -> None:
    """Register the magics; import now what a launch needs, so the first one returns fast."""
    import importlib

    ipython.register_magics(RunyardMagics)
    for name in _LAUNCH_MODULES:
        importlib.import_module(name)
    from runyard.notebook import widget

    widget.warm()


@dataclass(frozen=True)
class Launched:
    number: int
    name: str | None
    script: Path
    #: The command the run executes, e.g. ``python experiments/model_001.py``.
    command: tuple[str, ...]


@magics_class
class RunyardMagics(Magics):
    @no_var_expand  # `{x}` and `$x` in the cell are the script's own text, not the kernel's variables
    @line_cell_magic
    def runyard(self, line: str, cell: str | None = None) -> None:
        from runyard.errors import RunyardError

        try:
            words = shlex.split(line)
        except ValueError as e:
            raise UsageError(f"%runyard {line}: {e}") from None
        try:
            self._runyard(words, line, cell)
        except RunyardError as e:  # a setting or a store refused (outside the CLI's own handling): one line
            raise UsageError(str(e)) from None

    def _runyard(self, words: list[str], line: str, cell: str | None) -> None:
        if cell is not None:
            if words[:1] != ["run"]:
                raise UsageError(f"%%runyard takes `run [OPTIONS]` as a cell magic, not {line!r}\n{USAGE}")
            done = launch(words[1:], cell, Path.cwd())
            if done is None:  # --help was asked for, and printed
                return None
            for warning in cell_warnings(cell, self.shell.user_ns if self.shell is not None else {}):
                print(f"runyard: warning: {warning}", file=sys.stderr)
            from runyard.config import resolve
            from runyard.notebook.widget import launched, show, widgets_usable

            if not widgets_usable():
                print(f"run {done.number} queued: {' '.join(done.command)} "
                      f"(%runyard watch {done.number} follows it)")
                return None
            settings = resolve()
            show(done.number, settings, launched(done.number, done.name, settings))
            return None
        if not words:
            print(USAGE)
            return None
        if words[0] == "run":
            raise UsageError("%%runyard run is a cell magic: put it on the first line of the cell to launch, "
                             "e.g.\n%%runyard run --gpus 1\nimport train\n...")
        if words[0] == "watch":
            watch(words[1:])
            return None
        command(words)
        return None


def watch(args: list[str]) -> None:
    """``%runyard watch RUN``: the widget, or in a terminal one line each time the run changes."""
    if len(args) != 1:
        raise UsageError("%runyard watch RUN: give one run (a number, a name or an id prefix)")
    from runyard.api import Api
    from runyard.errors import Ambiguous, NotFound
    from runyard.notebook.widget import follow, read, show, widgets_usable

    try:
        with Api(catch_up=False) as api:
            first = read(api, api.store.get_run(args[0]).number)
    except (NotFound, Ambiguous) as e:
        raise UsageError(str(e)) from None
    if widgets_usable():
        show(first.number, first=first)
        return
    with contextlib.suppress(KeyboardInterrupt):  # stops watching; the run goes on
        follow(first.number)


def command(args: list[str]) -> None:
    """Run ``runyard ARGS`` in this process, as the shell would; its output appears in the cell as it
    is printed. A refusal (exit code not 0) raises UsageError with the command's own message."""
    _cli(args, capture=False)


def _cli(args: list[str], capture: bool) -> str:
    """``runyard ARGS`` in this process; what it printed on stdout when ``capture``. Its stderr is held
    until it ends: the message of a refusal becomes the UsageError's, warnings are passed on."""
    import click

    from runyard.cli.main import cli

    out = io.StringIO()
    err = io.StringIO()
    code: int | str | None = 0
    with contextlib.redirect_stderr(err), (contextlib.redirect_stdout(out) if capture
                                           else contextlib.nullcontext()):
        try:
            result = cli.main(args, prog_name="runyard", standalone_mode=False)
            code = result if isinstance(result, int) else 0
        except SystemExit as e:
            code = e.code
        except click.exceptions.Abort:  # interrupted (the stop button of the notebook): nothing to add
            return out.getvalue()
        except click.ClickException as e:
            hint = f" (see %runyard {args[0]} --help)" if args and isinstance(e, click.UsageError) else ""
            raise UsageError(f"{e.format_message().rstrip('.')}{hint}") from None
    said = err.getvalue()
    if code not in (0, None):
        message = said.strip().removeprefix("runyard: error: ") or f"runyard {' '.join(args)}: exit code {code}"
        raise UsageError(message)
    if said:
        sys.stderr.write(said)  # warnings of a command that succeeded
    return out.getvalue()


def check_options(words: list[str]) -> dict[str, Any] | None:
    """The options of ``%%runyard run`` as click reads them for ``runyard run`` (None once --help is
    printed); UsageError for what it refuses, for arguments (the cell is the command) and for
    --follow (it would hold the kernel)."""
    import click

    from runyard.cli.main import run as run_command

    try:
        ctx = run_command.make_context("%%runyard run", [*words, "--", *_PLACEHOLDER])
    except click.exceptions.Exit:  # --help was printed
        print("\nIn a notebook: %%runyard run [OPTIONS] on a cell's first line; the cell is the command.")
        return None
    except click.ClickException as e:
        raise UsageError(f"{e.format_message().rstrip('.')} (see %%runyard run --help)") from None
    if tuple(ctx.params["command"]) != _PLACEHOLDER:
        extra = " ".join(ctx.params["command"][: -len(_PLACEHOLDER)])
        raise UsageError(f"%%runyard run takes options only, the cell is the command (got {extra!r}); "
                         "to run another command, use !runyard run -- ...")
    if ctx.params["follow"]:
        raise UsageError("--follow would hold the kernel until the run ends: the widget follows it (or "
                         "%runyard logs -f RUN)")
    return dict(ctx.params)


def script_text(cell: str, notebook_dir: str = ".") -> str:
    """The cell as plain Python: ``!pip ...``, ``%time ...`` and the like turned into the calls IPython
    makes of them (``get_ipython().system(...)``); those need IPython where the run executes. A first
    line puts the notebook's directory (``notebook_dir``, from the run's root) on ``sys.path``, as
    the kernel has it: ``python experiments/model_NNN.py`` alone would look in experiments/ only."""
    from IPython.core.inputtransformer2 import TransformerManager

    return (f"import sys as _sys; _sys.path.insert(0, {notebook_dir!r})  {PREAMBLE_MARK}\n"
            + str(TransformerManager().transform_cell(cell)))  # type: ignore[no-untyped-call]


def free_names(source: str) -> set[str]:
    """Names the code reads at module level (in functions too) that it never binds there."""
    import symtable

    try:
        table = symtable.symtable(source, "<cell>", "exec")
    except SyntaxError:
        return set()  # the run will say so, with the line
    bound = {s.get_name() for s in table.get_symbols() if s.is_assigned() or s.is_imported()
             or s.is_namespace()}
    used: set[str] = set()
    pending = [table]
    while pending:
        t = pending.pop()
        pending.extend(t.get_children())
        for s in t.get_symbols():
            if s.is_referenced() and (t is table or s.is_global()):
                used.add(s.get_name())
    return used - bound


def cell_warnings(cell: str, user_ns: dict[str, Any]) -> list[str]:
    """What will fail in the run though it works in the notebook: variables of earlier cells, and
    IPython syntax (the run is plain Python, without IPython's get_ipython)."""
    import builtins

    script = script_text(cell)
    free = free_names(script)
    out = []
    # (IPython puts get_ipython among the builtins of its own process: not those of the run.)
    if "get_ipython" in free and "get_ipython" not in free_names(cell):
        out.append("the cell uses IPython syntax (!command, %magic), which the run executes as plain Python, "
                   "without IPython: use --pip for packages, subprocess for commands")
    earlier = sorted(name for name in free - set(dir(builtins)) - {"get_ipython"} if name in user_ns)
    if earlier:
        out.append(f"the cell uses {', '.join(earlier)} from earlier cells: the run has only what the cell "
                   "defines and imports (define them in the cell, or load them from files)")
    return out


def new_script(directory: Path, text: str) -> Path:
    """Write ``text`` to the next free ``directory/model_NNN.py`` (numbers ascending from the highest
    there). O_EXCL makes each number one writer's: another launch that took it moves us on."""
    directory.mkdir(parents=True, exist_ok=True)
    taken = [int(m.group(1)) for p in directory.iterdir() if (m := _MODEL.match(p.name))]
    number = max(taken, default=0) + 1
    while True:
        path = directory / f"model_{number:03d}.py"
        try:
            with open(path, "x", encoding="utf-8") as f:
                f.write(text)
            return path
        except FileExistsError:
            number += 1


def python_command(here: bool = True) -> str:
    """``python`` when that is the kernel's own interpreter, else the kernel's path: the cell ran
    (and will run) with the kernel's packages, whatever the PATH of the kernel finds first. A run
    elsewhere (``here`` False: a server's machine, a cluster) gets ``python``: the path is this
    machine's."""
    found = shutil.which("python")
    if not here:
        return "python"
    if found and Path(found).absolute() == Path(sys.executable).absolute():
        return "python"
    return sys.executable


def launch(words: list[str], cell: str, cwd: Path) -> Launched | None:
    """Launch ``cell`` as a run with the options ``words`` of ``runyard run``; returns at once (None,
    launching nothing, when ``words`` ask for --help)."""
    options = check_options(words)  # before any file is written
    if options is None:
        return None
    from runyard.exec.snapshot import git_root

    root = git_root(cwd) or cwd  # a run starts at its snapshot's root: name the script from there
    notebook_dir = cwd.resolve().relative_to(root.resolve()).as_posix()
    script = new_script(cwd / EXPERIMENTS, script_text(cell, notebook_dir))
    relative = script.resolve().relative_to(root.resolve()).as_posix()
    from runyard.config import resolve

    settings = resolve()
    here = not settings.server and (options["on"] or settings.executor) == "local"
    argv = (python_command(here), relative)
    try:
        printed = _cli(["run", *words, "--json", "--", *argv], capture=True)
    except BaseException:
        script.unlink(missing_ok=True)  # nothing launched: the number is free again
        raise
    # The run is queued now, whatever else the kernel's threads printed meanwhile (the capture is
    # process-wide): the script stays, and the number is the JSON line that says it.
    return Launched(_queued_number(printed), options["name"], script, argv)


def _queued_number(printed: str) -> int:
    from runyard.errors import RunyardError

    for line in reversed(printed.strip().splitlines()):
        with contextlib.suppress(ValueError, TypeError, KeyError):
            answer = json.loads(line)
            if isinstance(answer, dict) and isinstance(answer.get("number"), int):
                return int(answer["number"])
    raise RunyardError(f"the run was queued, but its number was not in what runyard run printed: {printed[-300:]!r}")
