"""Executing a notebook run, on the machine that runs it:

    python -m runyard.notebook.execute NOTEBOOK

is the command of a run of kind ``notebook``: the supervisor starts it like any command, in the
run's directory, with the run's Python (the one its PATH finds, a ``--pip`` environment's when it
has one), so the kernel runs in that same Python: the packages the run was given, and runyard's SDK
attached to the run (``runyard.init()`` in a cell logs to it; JSON lines printed by a cell become
metrics, as a script's do).

papermill does the executing, for its conventions users already know (the ``parameters`` tag, the
injected cell, ``metadata.papermill`` per cell, the error banner and anchor at the failing cell,
``sys.exit(0)`` counted a success, autosaving every 30 s). What it lacks is added here: each code
cell's start, its streamed output and its end with its duration go to the run's log as they happen
(papermill runs "look hung": nteract/papermill#433); a stop request interrupts the kernel and the
notebook is saved as far as it went; a dead kernel is told apart from a cell's exception.

The executed notebook is written to ``outputs/<notebook name>.ipynb`` (so it is kept as an output,
partial ones too), and one line saying how the run ended to the file named by ``OUTCOME_ENV``,
which the supervisor makes the run's status message. Exit codes: ``EXIT_CODES``.

Only the standard library is imported at module level: the supervisor imports the constants.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The variable naming the file, in the run's directory, the executor writes how the run ended to
#: (one JSON object).
OUTCOME_ENV = "RUNYARD_NOTEBOOK_OUTCOME"
#: Where the executed notebook goes, in the run's directory: kept as an output of the run.
OUTPUT_DIRECTORY = "outputs"
#: A cell raised an exception (papermill's code for it).
CELL_ERROR = 1
#: The notebook could not be read, or a parameter could not be injected.
BAD_NOTEBOOK = 2
#: The run's Python cannot run a kernel (no ipykernel or papermill).
NO_KERNEL = 3
#: Stopped (``runyard stop``, SIGTERM or SIGINT): the kernel was interrupted.
STOPPED = 130
#: The kernel died (out of memory, killed): papermill's code for DeadKernelError.
KERNEL_DIED = 138
EXIT_CODES = {CELL_ERROR: "a cell raised an exception", BAD_NOTEBOOK: "the notebook could not be prepared",
              NO_KERNEL: "the run's Python cannot start a kernel", STOPPED: "stopped",
              KERNEL_DIED: "the kernel died"}
#: How often a long cell's outputs save the executed notebook (papermill's autosave_cell_every).
AUTOSAVE_SECONDS = 30
#: The parameters the supervisor wrote for the run (``runyard.exec.outputs.PARAMS_FILE``).
PARAMS_FILE = "runyard-params.json"
#: The name of the kernel written for the run: the notebook's own kernelspec names a kernel of the
#: machine it was written on, which need not exist here; the run's kernel is the run's Python.
KERNEL_NAME = "python3"


@dataclass
class _State:
    """What the signal handler and papermill's callbacks share while the notebook runs."""

    stop: bool = False
    client: Any = None
    kernel: Any = None  # the kernel's Popen, kept to tell how it died after nbclient let it go
    cells: int = 0
    exited: bool = False  # a cell called sys.exit(0): a success, the cells after it not run
    current: int = 0
    started: float = 0.0


class _Stopped(Exception):
    """Raised between cells once a stop is requested."""


def outcome_of(path: Path) -> str | None:
    """The one-line outcome an executor wrote at ``path`` (None if it wrote none)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    message = data.get("message") if isinstance(data, dict) else None
    return message if isinstance(message, str) else None


def _say(text: str) -> None:
    """A line of the executor's own in the run's log (stderr: stdout is the cells', and their JSON
    lines are metrics)."""
    print(f"[notebook] {text}", file=sys.stderr, flush=True)


def _finish(code: int, message: str) -> int:
    _say(message)
    target = os.environ.get(OUTCOME_ENV)
    if target:
        Path(target).write_text(json.dumps({"exit_code": code, "message": message}))
    return code


def _kernel_spec(directory: Path) -> None:
    """A kernelspec named KERNEL_NAME running ipykernel with this Python, first on JUPYTER_PATH, so
    neither a user's kernelspec of the same name nor the notebook's metadata picks another Python."""
    spec = directory / "kernels" / KERNEL_NAME
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        # The kernel's own log at ERROR: at WARNING every run's log would start with ipykernel's notice
        # that its loopback TCP is unencrypted. What cells print is not the kernel's log.
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}",
                 "--IPKernelApp.log_level=ERROR"],
        "display_name": "Python (runyard run)", "language": "python",
        "metadata": {"debugger": False}}))
    os.environ["JUPYTER_PATH"] = os.pathsep.join(p for p in (str(directory), os.environ.get("JUPYTER_PATH")) if p)


def _record_kernel(process: Any) -> None:
    """The kernel leads a session of its own (jupyter_client starts it so), out of the reach of the
    parent-death signal and of the supervisor's signals to the executor's group: its group is
    recorded with the run's (``runyard.exec.groups``, in the run's directory, where the outcome
    file is), so that whoever finds the run abandoned kills it too."""
    target = os.environ.get(OUTCOME_ENV)
    if process is None or not target:
        return
    from runyard.exec.groups import record

    with contextlib.suppress(OSError):
        record(Path(target).parent, os.getpgid(process.pid))


def _first_line(source: str) -> str:
    line = next((x.strip() for x in source.splitlines() if x.strip()), "")
    return line if len(line) <= 60 else line[:57] + "..."


def _watch(nb_man: Any, state: _State) -> None:
    """Say each code cell's start and end in the log; stop between cells once asked."""
    start, complete = nb_man.cell_start, nb_man.cell_complete
    code_cells = [i for i, c in enumerate(nb_man.nb.cells) if c.cell_type == "code"]
    state.cells = len(code_cells)
    begun: set[int] = set()

    def cell_start(cell: Any, cell_index: int | None = None, **kwargs: Any) -> Any:
        if state.stop:
            raise _Stopped
        begun.add(id(cell))
        result = start(cell, cell_index, **kwargs)
        if cell.cell_type == "code":
            state.current = code_cells.index(cell_index) + 1 if cell_index in code_cells else 0
            state.started = time.monotonic()
            if state.kernel is None and state.client is not None:
                state.kernel = getattr(getattr(state.client.km, "provisioner", None), "process", None)
                _record_kernel(state.kernel)
            tag = " (injected parameters)" if "injected-parameters" in cell.metadata.get("tags", []) else ""
            _say(f"cell {state.current}/{state.cells}{tag} started: {_first_line(cell.source)}")
        return result

    def cell_complete(cell: Any, cell_index: int | None = None, **kwargs: Any) -> Any:
        if id(cell) not in begun:  # never started (stopped before it): leave it pending
            return None
        result = complete(cell, cell_index, **kwargs)
        if cell.cell_type == "code":
            took = time.monotonic() - state.started
            errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
            if errors and errors[0].get("ename") == "SystemExit" and errors[0].get("evalue") in ("", "0"):
                how = "ended the notebook (sys.exit(0))"
                state.exited = True
            else:
                how = "failed" if cell.metadata.get("papermill", {}).get("exception") else "finished"
            _say(f"cell {state.current}/{state.cells} {how} after {took:.2f} s")
        return result

    nb_man.cell_start, nb_man.cell_complete = cell_start, cell_complete


def _engine(state: _State) -> Any:
    """papermill's nbclient engine, keeping its client (to interrupt its kernel) and watching cells."""
    from papermill.clientwrap import PapermillNotebookClient  # type: ignore[import-untyped]
    from papermill.engines import NBClientEngine  # type: ignore[import-untyped]
    from papermill.log import logger  # type: ignore[import-untyped]

    class RunyardEngine(NBClientEngine):  # type: ignore[misc]
        @classmethod
        def execute_managed_notebook(cls, nb_man: Any, kernel_name: str, **kwargs: Any) -> Any:
            _watch(nb_man, state)
            # As NBClientEngine builds its client (no execution timeout: papermill's default).
            client = PapermillNotebookClient(
                nb_man, kernel_name=kernel_name, log=logger, log_output=False,
                startup_timeout=kwargs.get("start_timeout", 60),
                stdout_file=kwargs.get("stdout_file"), stderr_file=kwargs.get("stderr_file"))
            state.client = client
            return client.execute()

    return RunyardEngine


def _interrupt(state: _State) -> None:
    """SIGINT to the kernel, as Jupyter's interrupt button does: the running cell raises
    KeyboardInterrupt, papermill saves the notebook with it, and the executor ends."""
    state.stop = True
    process = state.kernel
    if process is None and state.client is not None and getattr(state.client, "km", None) is not None:
        process = getattr(getattr(state.client.km, "provisioner", None), "process", None)
    if process is not None and process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGINT)  # the kernel leads a session of its own (jupyter_client)
        except OSError:
            with contextlib.suppress(OSError):
                os.kill(process.pid, signal.SIGINT)


def _died(state: _State) -> str:
    process = state.kernel
    code = process.poll() if process is not None else None
    if code is not None and code < 0:
        name = signal.Signals(-code).name
        why = " (as the out-of-memory killer does: the run may need more memory)" if name == "SIGKILL" else ""
        return f"killed by {name}{why}"
    if code is not None:
        return f"exited with code {code}"
    return "stopped answering"


def execute(notebook: str) -> int:
    """Run ``notebook`` (a path in the run's directory) with the run's parameters; the exit code."""
    import importlib.util

    missing = [m for m in ("ipykernel", "papermill") if importlib.util.find_spec(m) is None]
    if missing:
        return _finish(NO_KERNEL, f"the run's Python ({sys.executable}) has no {' or '.join(missing)}, which a "
                                  f"notebook run needs: install runyard[notebook] there, or add --pip "
                                  f"{' --pip '.join(missing)}")
    source = Path(notebook)
    output = Path(OUTPUT_DIRECTORY) / f"{source.stem}.ipynb"
    try:
        params = json.loads(Path(PARAMS_FILE).read_text()) if Path(PARAMS_FILE).exists() else {}
    except ValueError as e:
        return _finish(BAD_NOTEBOOK, f"{PARAMS_FILE} is not JSON: {e}")
    from runyard.errors import InvalidArgument
    from runyard.notebook.params import check, declared, load, values_of

    texts = {str(k): str(v) for k, v in params.items()}
    try:
        nb = load(source)
        check(notebook, nb, texts)  # checked when queued; again here, for what a rerun changes
    except InvalidArgument as e:
        return _finish(BAD_NOTEBOOK, str(e))
    values = values_of(texts)
    if values and not declared(nb).tagged:
        _say(f"{notebook} has no cell tagged 'parameters': the parameters are set in a cell at the top")
    output.parent.mkdir(parents=True, exist_ok=True)

    import logging

    import papermill  # type: ignore[import-untyped]
    from nbclient.exceptions import DeadKernelError
    from papermill.engines import papermill_engines
    from papermill.exceptions import PapermillExecutionError  # type: ignore[import-untyped]

    # papermill's own messages (input/output paths, "no parameters cell") are said here in our words.
    logging.getLogger("papermill").setLevel(logging.ERROR)
    state = _State()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: _interrupt(state))
    papermill_engines.register("runyard", _engine(state))
    _say(f"executing {notebook} with {sys.executable}; the executed notebook: {output}")
    if values:
        _say("parameters: " + ", ".join(f"{k}={v!r}" for k, v in values.items()))
    with tempfile.TemporaryDirectory(prefix="runyard-kernel-") as kernels:
        _kernel_spec(Path(kernels))
        try:
            papermill.execute_notebook(
                # The kernel starts in the notebook's directory, as Jupyter starts it: its relative
                # paths mean what they meant when it was written. Paths absolute: papermill saves
                # from inside that directory.
                str(source.resolve()), str(output.resolve()), cwd=str(source.resolve().parent),
                parameters=values, engine_name="runyard", kernel_name=KERNEL_NAME,
                language="python", progress_bar=False, log_output=False, stdout_file=sys.stdout,
                stderr_file=sys.stderr, autosave_cell_every=AUTOSAVE_SECONDS)
        except _Stopped:
            return _finish(STOPPED, f"stopped before cell {state.current + 1} of {state.cells}")
        except PapermillExecutionError as e:
            if state.stop or e.ename == "KeyboardInterrupt":
                return _finish(STOPPED, f"{'stopped' if state.stop else 'interrupted'} in cell {state.current} "
                                        f"of {state.cells} (In [{e.exec_count}]: {_first_line(e.source)})")
            return _finish(CELL_ERROR, f"cell {state.current} of {state.cells} (In [{e.exec_count}]: "
                                       f"{_first_line(e.source)}) raised {e.ename}: {e.evalue}")
        except DeadKernelError:
            if state.stop:
                return _finish(STOPPED, f"stopped in cell {state.current} of {state.cells}")
            return _finish(KERNEL_DIED, f"the kernel died in cell {state.current} of {state.cells}, "
                                        f"{_died(state)}; not an exception of the cell")
    if state.stop:
        return _finish(STOPPED, "stopped after the last cell")
    if state.exited:
        return _finish(0, f"finished by sys.exit(0) in cell {state.current} of {state.cells}")
    return _finish(0, f"executed {state.cells} code cells")


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: python -m runyard.notebook.execute NOTEBOOK (the command of a notebook run)", file=sys.stderr)
        return BAD_NOTEBOOK
    return execute(sys.argv[1])


if __name__ == "__main__":
    raise SystemExit(main())
