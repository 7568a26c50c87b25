"""LocalExecutor: runs start as supervisor processes on this machine, each in its own session.

The supervisor outlives the agent that started it; its pid is in the run directory, which is how
``runyard stop`` reaches it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from runyard.exec.spec import LaunchSpec, run_directory
from runyard.exec.supervisor import PID_FILE

SPEC_FILE = "launch.json"


class LocalExecutor:
    name = "local"

    def __init__(self, home: Path) -> None:
        self.home = home

    def submit(self, spec: LaunchSpec) -> None:
        directory = run_directory(self.home, spec.run_id)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / SPEC_FILE).write_text(spec.to_json())
        with (directory / "supervisor.log").open("ab") as log:
            subprocess.Popen(
                [sys.executable, "-m", "runyard.exec.supervisor", str(directory / SPEC_FILE)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=directory, start_new_session=True,
                close_fds=True,
            )

    def submitted(self, run_id: str) -> bool:
        """Whether ``submit`` got as far as writing the run's launch spec (it does so first)."""
        return (run_directory(self.home, run_id) / SPEC_FILE).exists()

    def _pid(self, run_id: str) -> int | None:
        try:
            return int((run_directory(self.home, run_id) / PID_FILE).read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def forget(self, store: object) -> None:
        pass  # nothing is made for a local run beyond its run directory (runyard gc)

    def ended(self, run_id: str) -> str | None:
        return None  # the spool's reader sees a supervisor die (ingest.tailer's abandoned writers)

    def alive(self, run_id: str) -> bool:
        pid = self._pid(run_id)
        if pid is None:
            return False
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False
        return b"runyard.exec.supervisor" in cmdline and run_id.encode() in cmdline

    def end_abandoned(self, run_id: str) -> list[int]:
        """Kill what is left of a run whose supervisor died (the command's children, re-parented to
        init); returns the process groups killed. Nothing while its supervisor is alive."""
        from runyard.exec.groups import end_abandoned

        if self.alive(run_id):
            return []
        return end_abandoned(run_directory(self.home, run_id), run_id)

    def stop(self, run_id: str) -> bool:
        """Ask the run's supervisor to stop it (SIGTERM); False if no supervisor is running."""
        pid = self._pid(run_id)
        if pid is None or not self.alive(run_id):
            return False
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return False
        return True
