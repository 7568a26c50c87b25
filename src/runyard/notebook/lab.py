"""JupyterLab as a run: the command that starts it, and runyard's own judgement of when it is idle.

JupyterLab's own idle shutdown cannot be trusted with a GPU machine: an open browser tab keeps its
timers alive for ever (its polls count as activity), while its kernel culler stops a long, silent
training cell. runyard judges activity itself, from what JupyterLab says about its kernels and
terminals (asked with ``no_track_activity``, so the asking does not count) and from the GPUs:

* a kernel busy now, a kernel or terminal whose last activity moved since the last look, or a
  process of the run on a GPU: active now;
* else idle since the last time one of those was seen.

Jupyter's own culling is switched off in the command (``cull_idle_timeout=0``,
``shutdown_no_activity_timeout=0``): one judge, not two that disagree.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

#: The label of JupyterLab runs (``runyard notebook``): a rerun of one resumes it.
LABEL = "jupyterlab"
#: Seconds between two looks at JupyterLab's activity.
LOOK_EVERY = 30.0


def base_url(run_id: str) -> str:
    """The path JupyterLab of run ``run_id`` serves under: the one the runyard server's lab origin
    proxies it at (``/lab/<run id>/``), so that its own links work there and on its loopback port."""
    return f"/lab/{run_id}/"


def lab_command(python: str, *, port: int, root_dir: Path, base_url: str = "/", ip: str = "127.0.0.1") -> list[str]:
    """The command that serves JupyterLab on ``ip`` (loopback unless a Ray node's supervisor says
    otherwise), for ``root_dir``, without a browser. The token comes from the environment
    (``JUPYTER_TOKEN``, see ``lab_environment``), never the command line, which every user of the
    machine can read."""
    import ipaddress

    if not base_url.startswith("/") or not base_url.endswith("/"):
        raise ValueError(f"base_url must start and end with '/', not {base_url!r}")
    # Jupyter refuses a Host that is not loopback unless told: on a node, the runyard server's
    # requests name the node's address (still only with the token).
    remote = not ipaddress.ip_address(ip).is_loopback
    return [python, "-m", "jupyterlab", "--no-browser", f"--ip={ip}", f"--port={port}",
            "--ServerApp.port_retries=0", f"--ServerApp.base_url={base_url}", f"--ServerApp.root_dir={root_dir}",
            # runyard judges idleness (this module): Jupyter's own culling would stop a silent
            # training cell, and its shutdown timer never fires while a tab is open.
            "--MappingKernelManager.cull_idle_timeout=0", "--ServerApp.shutdown_no_activity_timeout=0",
            f"--ServerApp.allow_remote_access={remote}",
            # Containers and cloud machines often run everything as root, which Jupyter refuses
            # unless told: the runyard run is the sandbox here, not the user account.
            *(["--allow-root"] if os.geteuid() == 0 else [])]


def lab_environment(token: str, runtime_dir: Path | None = None) -> dict[str, str]:
    """What the JupyterLab process needs in its environment: its token, and where it writes its
    runtime files (``jpserver-<pid>.json`` once it listens, its kernels' connection files): a
    directory of the run's own, not the user's shared one."""
    if len(token) < 32:
        raise ValueError("a JupyterLab token must be at least 32 characters")
    return {"JUPYTER_TOKEN": token, **({"JUPYTER_RUNTIME_DIR": str(runtime_dir)} if runtime_dir else {})}


def listening(runtime_dir: Path, pid: int, port: int) -> bool:
    """Whether JupyterLab ``pid`` has said (in its runtime file, written once it listens) that it
    listens on ``port``: until then, whatever answers there may be another process that took the
    port first, and must not be sent the token."""
    import json

    try:
        info = json.loads((runtime_dir / f"jpserver-{pid}.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and info.get("port") == port and info.get("pid") == pid


@dataclass(frozen=True)
class Look:
    """What JupyterLab said at one look."""

    kernels: int
    busy: int
    terminals: int
    #: The latest ``last_activity`` of any kernel or terminal (a time), or None without any.
    latest: float | None


class IdleJudge:
    """How long a JupyterLab at ``url`` (its base URL) has been idle, by runyard's rule (module doc).

    ``gpu_busy`` says whether a process of the run is on a GPU now. ``look()`` asks JupyterLab once
    and returns the seconds idle so far; ``idle_for`` is that figure at the last look.
    """

    def __init__(self, url: str, token: str, *, gpu_busy: Callable[[], bool] = lambda: False,
                 clock: Callable[[], float] = time.time, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.gpu_busy = gpu_busy
        self.clock = clock
        self.timeout = timeout
        self.active_at = clock()
        self._latest: float | None = None
        self.last: Look | None = None

    @property
    def idle_for(self) -> float:
        return max(0.0, self.clock() - self.active_at)

    def look(self) -> float:
        """Ask JupyterLab (raises ``httpx.HTTPError`` when it does not answer) and update the judgement."""
        seen = self.ask()
        now = self.clock()
        moved = seen.latest is not None and (self._latest is None or seen.latest > self._latest)
        if seen.busy or (moved and self._latest is not None) or self.gpu_busy():
            self.active_at = now
        elif moved and seen.latest is not None:
            # The first look: what happened before it counts from when it happened.
            self.active_at = max(self.active_at, min(now, seen.latest))
        if seen.latest is not None:
            self._latest = max(seen.latest, self._latest or seen.latest)
        self.last = seen
        return self.idle_for

    def ask(self) -> Look:
        import httpx

        headers = {"Authorization": f"token {self.token}"}
        params = {"no_track_activity": "1"}
        with httpx.Client(timeout=self.timeout, headers=headers, trust_env=False) as client:
            kernels = self._json(client.get(f"{self.url}/api/kernels", params=params))
            terminals_answer = client.get(f"{self.url}/api/terminals", params=params)
            # Terminals switched off answer 404: no terminal can be in use.
            terminals = [] if terminals_answer.status_code == 404 else self._json(terminals_answer)
        times = [_time(item.get("last_activity")) for item in [*kernels, *terminals]]
        known = [t for t in times if t is not None]
        return Look(kernels=len(kernels), busy=sum(1 for k in kernels if k.get("execution_state") == "busy"),
                    terminals=len(terminals), latest=max(known) if known else None)

    @staticmethod
    def _json(answer: Any) -> list[dict[str, Any]]:
        answer.raise_for_status()
        data = answer.json()
        if not isinstance(data, list):
            raise ValueError(f"JupyterLab answered {answer.request.url} with {type(data).__name__}, not a list")
        return [item for item in data if isinstance(item, dict)]


def _time(text: object) -> float | None:
    """A Jupyter timestamp ("2026-12-01T15:00:00.123456Z") as a time, or None."""
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
