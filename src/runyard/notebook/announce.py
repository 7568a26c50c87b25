"""Where a JupyterLab run on a Ray node answers, told to the runyard server that opens it.

On the submitter's machine the server finds a notebook run's JupyterLab in the run's directory
(``lab.json``). A run on a Ray node has its directory on the node, so the node's supervisor tells the
server instead: ``POST /api/v1/runs/{run_id}/lab/address`` with the address and JupyterLab's token, with the
run's own token (a writer limited to the run's project). It says it again every ``EVERY`` seconds:
the server keeps it in memory only (the token never reaches the store) and forgets it after
``KEPT_FOR`` seconds without news, so a restarted server learns it again within a minute.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

#: Seconds between two announcements once the server has one.
EVERY = 30.0
#: Seconds the server keeps an announcement that was not renewed.
KEPT_FOR = 3 * EVERY
#: Seconds between looks for ``lab.json`` while JupyterLab starts.
STARTING_EVERY = 0.5


def address_toward(server: str) -> str:
    """This machine's address on the route to ``server``: the one the server can reach it on (no
    packet is sent; connecting a UDP socket only picks the route)."""
    parts = urlsplit(server)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    family, kind, proto, _, target = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
    with socket.socket(family, kind, proto) as probe:
        probe.connect(target)
        return str(probe.getsockname()[0])


class Announcer:
    """Tells the server where the run's JupyterLab answers, from the moment it does until ``stop``."""

    def __init__(self, run_id: str, read: Callable[[], dict[str, Any] | None],
                 send: Callable[[str, dict[str, Any]], object]) -> None:
        """``read``: the run's connection (``connection.read_connection``); ``send(path, body)``: a
        POST to the server (the node's client)."""
        self.run_id = run_id
        self._read = read
        self._send = send
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="runyard-lab-announce", daemon=True)
        self._last_said = ""

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.is_set():
            found = self._read()
            if found is None:
                self._stop.wait(STARTING_EVERY)
                continue
            try:
                self._send(f"/runs/{self.run_id}/lab/address",
                           {"host": found["host"], "port": found["port"], "token": found["token"]})
            except Exception as e:  # noqa: BLE001 - a server down for a while: said (once), and tried again
                said = f"runyard node: could not tell the server where JupyterLab answers: {e}"
                if said != self._last_said:
                    print(said, flush=True)
                    self._last_said = said
                self._stop.wait(min(5.0, EVERY))
                continue
            self._last_said = ""
            self._stop.wait(EVERY)
