"""Where a model server answers: ``serve.json`` in the serve run's directory, written by
``serve.main`` once the model is loaded and read by ``runyard serve``, ``runyard ps`` and the
runyard server's ``/serve/NAME/``. Light: nothing of the web stack is imported here."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: The file, in the run's directory, that says where a model server answers.
SERVE_FILE = "serve.json"


def serve_file(home: Path, run_id: str) -> Path:
    from runyard.exec.spec import run_directory

    return run_directory(home, run_id) / SERVE_FILE


def read_serve_file(home: Path, run_id: str) -> dict[str, Any] | None:
    """Where the run's model server answers ({url, host, port, pid, name}), or None before it does."""
    try:
        data = json.loads(serve_file(home, run_id).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
