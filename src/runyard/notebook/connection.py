"""Where a JupyterLab run answers: ``lab.json`` in the run's directory, written by ``labrun`` once
JupyterLab is up and read by ``runyard notebook``, the server's lab origin and a Ray node's supervisor.
It holds JupyterLab's token, so it is readable by its owner only and never an output of the run."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

#: The file, in the run's directory, that says where its JupyterLab answers (with its token).
CONNECTION_FILE = "lab.json"
#: The variable that tells ``labrun`` which address to serve JupyterLab on (default: loopback); a
#: Ray node's supervisor sets it to the node's address toward the runyard server.
LAB_IP = "RUNYARD_LAB_IP"


def connection_file(home: Path, run_id: str) -> Path:
    from runyard.exec.spec import run_directory

    return run_directory(home, run_id) / CONNECTION_FILE


def read_connection(home: Path, run_id: str) -> dict[str, Any] | None:
    """Where the run's JupyterLab answers ({url, token, host, port, pid, base}: ``base`` is the path
    it serves under, ``lab.base_url``), or None before it does."""
    try:
        data = json.loads(connection_file(home, run_id).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_connection(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # the token: its owner's eyes only
    with os.fdopen(fd, "w") as f:
        json.dump(data, f)
    tmp.replace(path)
