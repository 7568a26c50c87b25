"""What a JupyterLab run executes: ``python -m runyard.notebook.labrun --idle SECONDS``.

The supervisor runs this like any command, in the run's work directory (the snapshot it was given,
or the files of the notebook run it resumes). It serves JupyterLab on loopback with a fresh token,
writes where it answers to ``lab.json`` in the run's directory (readable by the run's owner only,
and not an output: the token never reaches the store), and stops JupyterLab once runyard's judge
(``lab.IdleJudge``) has found it idle for ``--idle`` seconds, saying so in the run's log a while
before. The supervisor then keeps the work directory as the run's outputs, as for any run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runyard.notebook.connection import LAB_IP, connection_file, write_connection
from runyard.notebook.lab import LOOK_EVERY, IdleJudge, base_url, lab_command, lab_environment, listening

#: Seconds JupyterLab may take to answer its API once started.
START_TIMEOUT = 180.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runyard.notebook.labrun",
                                     description="Serve JupyterLab for a runyard run until it is idle.")
    parser.add_argument("--idle", type=float, default=float(os.environ.get("RUNYARD_PARAM_idle")  # noqa: SIM112 - a param's name as written
                                                                  or 3600.0),
                        help="seconds idle before stopping (default: the run's param idle, else 3600)")
    parser.add_argument("--warn", type=float, help="seconds before stopping to say so (default: 300, at most a "
                                                   "quarter of --idle)")
    args = parser.parse_args(argv)
    if args.idle <= 0:
        parser.error("--idle must be more than 0 seconds")
    warn = args.warn if args.warn is not None else min(300.0, args.idle / 4)
    look_every = min(LOOK_EVERY, max(1.0, args.idle / 10))  # a short --idle is judged as closely
    home, run_id = os.environ.get("RUNYARD_HOME"), os.environ.get("RUNYARD_RUN_ID")
    if not home or not run_id:
        print("runyard: labrun runs inside a runyard run: use `runyard notebook`", file=sys.stderr)
        return 2
    root = Path.cwd()
    restored = restore_parent(run_id, root)
    if restored:
        print(f"restored {restored} file(s) of notebook run {restored.parent}", flush=True)
    token = secrets.token_urlsafe(32)
    # Loopback, unless a Ray node's supervisor names the node's address toward the runyard server
    # (LAB_IP): the server is then its only client, with its token.
    host = os.environ.get(LAB_IP) or "127.0.0.1"
    port = _free_port(host)
    # Under /lab/<run id>/: the path the runyard server's lab origin proxies it at (server/lab.py), so
    # that JupyterLab's own links are right there as well as on its loopback port.
    base = base_url(run_id)
    runtime = connection_file(Path(home), run_id).parent / "jupyter-runtime"
    runtime.mkdir(mode=0o700, exist_ok=True)
    lab = subprocess.Popen(lab_command(sys.executable, port=port, root_dir=root, base_url=base, ip=host),
                           env={**os.environ, **lab_environment(token, runtime)}, stdin=subprocess.DEVNULL)
    from runyard.wire import url_host

    shown = url_host(host)
    url = f"http://{shown}:{port}{base.rstrip('/')}"
    stopping = {"signal": 0}

    def on_signal(signum: int, _frame: Any) -> None:
        stopping["signal"] = signum  # the supervisor stops the process group: JupyterLab got it too

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    judge = IdleJudge(url, token, gpu_busy=lambda: _on_gpu(lab.pid))
    kernels = _Groups(connection_file(Path(home), run_id).parent, lab.pid)
    if not _wait_until_up(judge, lab, stopping, lambda: listening(runtime, lab.pid, port)):
        _stop(lab, kernels)
        return lab.returncode if lab.returncode not in (None, 0) else 1
    write_connection(connection_file(Path(home), run_id), {"url": f"{url}/lab", "token": token, "host": host,
                                                           "port": port, "pid": lab.pid, "base": base})
    print(f"JupyterLab is up on {url}/lab; it stops after {_words(args.idle)} idle "
          "(no busy kernel, no terminal in use, no process on a GPU)", flush=True)
    warned = False
    failing_since: float | None = None
    while lab.poll() is None and not stopping["signal"]:
        _sleep(look_every, lab, stopping, kernels.note)
        if lab.poll() is not None or stopping["signal"]:
            break
        kernels.note()
        try:
            idle = judge.look()
            failing_since = None
        except Exception as e:  # noqa: BLE001 - a look that fails is said; JupyterLab may be busy answering
            print(f"runyard: could not ask JupyterLab about its activity: {type(e).__name__}: {e}", flush=True)
            failing_since = failing_since if failing_since is not None else time.monotonic()
            if time.monotonic() - failing_since >= args.idle:
                print(f"JupyterLab has not answered for {_words(args.idle)}: stopping it; its work directory is "
                      "kept as this run's outputs", flush=True)
                _stop(lab, kernels)
                return 1
            continue
        if idle < args.idle - warn:
            warned = False
        elif idle < args.idle and not warned:
            print(f"JupyterLab has been idle for {_words(idle)}: it stops in {_words(args.idle - idle)} "
                  "unless something runs", flush=True)
            warned = True
        elif idle >= args.idle:
            print(f"JupyterLab was idle for {_words(idle)}: stopping it; its work directory is kept as this "
                  "run's outputs", flush=True)
            _stop(lab, kernels)
            return 0
    _stop(lab, kernels)
    if stopping["signal"]:
        return 128 + stopping["signal"]
    print(f"JupyterLab exited by itself (code {lab.returncode})", flush=True)
    return lab.returncode or 0


class Restored(int):
    """How many files were restored, and from which run (``parent``)."""

    parent: int = 0


def restore_parent(run_id: str, root: Path) -> Restored:
    """When this run resumes a notebook run (``runyard notebook --resume``: a rerun of one), put that
    run's files, its outputs, into ``root`` as they were when it stopped: writable copies, over the
    snapshot's. Each resumed run keeps them as its own outputs in turn, so a chain of resumes carries
    the files along."""
    from runyard.api import Api

    api = Api(catch_up=False)
    try:
        run = api.run(run_id)
        if run.parent is None:
            return Restored(0)
        parent = api.run(run.parent)
        if parent.kind.value != "jupyterlab":
            return Restored(0)
        count = 0
        for entry in parent.artifacts():
            target = root / entry.path
            if target.is_symlink() or target.is_file():
                target.unlink()  # the snapshot's copy: the notebook's version replaces it
            api.export(parent.record, entry, root, entry.path)
            target.chmod(target.stat().st_mode | 0o200)  # the user goes on editing it
            count += 1
        done = Restored(count)
        done.parent = parent.number
        return done
    finally:
        api.close()


def _wait_until_up(judge: IdleJudge, lab: subprocess.Popen[bytes], stopping: dict[str, int],
                   bound: Callable[[], bool]) -> bool:
    """Until JupyterLab answers its API. It is asked (with its token) only once ``bound`` says that it
    is JupyterLab that listens on the port, not a process that took the port while it started."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline and not stopping["signal"]:
        if lab.poll() is not None:
            print(f"runyard: JupyterLab exited while starting (code {lab.returncode})", file=sys.stderr)
            return False
        if not bound():
            time.sleep(0.1)
            continue
        try:
            judge.ask()
            return True
        except Exception:  # noqa: BLE001 - not answering yet
            time.sleep(0.2)
    if not stopping["signal"]:
        print(f"runyard: JupyterLab did not answer within {START_TIMEOUT:g} s", file=sys.stderr)
    return False


class _Groups:
    """The process groups of JupyterLab's kernels and terminals: each leads a session of its own
    (jupyter_client and terminado start them so), out of reach of the signals the supervisor sends
    the command's group. Recorded with the run's groups (``runyard.exec.groups``), so that whoever
    finds the run abandoned ends them too, and ended by ``_stop`` when JupyterLab did not."""

    def __init__(self, directory: Path, root: int) -> None:
        self.directory = directory
        self.root = root
        self.seen: set[int] = set()

    def note(self) -> None:
        import psutil

        from runyard.exec.groups import record

        ours = os.getpgid(0)
        try:
            children = psutil.Process(self.root).children(recursive=True)
        except psutil.Error:
            return
        for child in children:
            with contextlib.suppress(OSError, psutil.Error):
                pgid = os.getpgid(child.pid)
                if pgid != ours and pgid not in self.seen:
                    self.seen.add(pgid)
                    record(self.directory, pgid)

    def end(self) -> None:
        """SIGTERM to each group still there, then SIGKILL to what is left after 5 s."""
        for sig, pause in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 0.0)):
            alive = [g for g in self.seen if _signal_group(g, sig)]
            if not alive:
                return
            deadline = time.monotonic() + pause
            while pause and time.monotonic() < deadline and any(_signal_group(g, 0) for g in alive):
                time.sleep(0.1)


def _signal_group(pgid: int, sig: int) -> bool:
    try:
        os.killpg(pgid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def _stop(lab: subprocess.Popen[bytes], kernels: _Groups) -> None:
    """Stop JupyterLab (it shuts its kernels down): SIGTERM, then SIGKILL after 30 s; then end the
    kernels and terminals it left."""
    kernels.note()
    if lab.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            lab.terminate()
        try:
            lab.wait(30)
        except subprocess.TimeoutExpired:
            lab.kill()
            lab.wait()
    kernels.end()


def _sleep(seconds: float, lab: subprocess.Popen[bytes], stopping: dict[str, int],
           every_2s: Callable[[], None]) -> None:
    deadline = time.monotonic() + seconds
    ticks = 0
    while time.monotonic() < deadline and lab.poll() is None and not stopping["signal"]:
        time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
        ticks += 1
        if ticks % 4 == 0:
            every_2s()


def _on_gpu(root_pid: int) -> bool:
    """Whether a process under ``root_pid`` (JupyterLab, its kernels, what they started) is on a GPU."""
    try:
        import psutil
        import pynvml
    except ImportError:
        return False
    try:
        ours = {root_pid, *(p.pid for p in psutil.Process(root_pid).children(recursive=True))}
        pynvml.nvmlInit()
    except (psutil.Error, pynvml.NVMLError):
        return False
    try:
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
                if proc.pid in ours:
                    return True
        return False
    except pynvml.NVMLError:
        return False
    finally:
        with contextlib.suppress(pynvml.NVMLError):
            pynvml.nvmlShutdown()


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _words(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds >= 3600:
        return f"{seconds / 3600:.3g} h"
    if seconds >= 60:
        return f"{seconds / 60:.3g} min"
    return f"{seconds:.0f} s"


if __name__ == "__main__":
    sys.exit(main())
