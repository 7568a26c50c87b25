"""How many GPUs a run can have: this machine's (NVML), or another machine's serving the same database.

The scheduler counts this machine's GPUs with ``gpu_count`` and learns the other machines' from
their agents' leases; ``runyard run`` asks the same two sources, so a run asking for GPUs that no
machine has is refused when it is submitted instead of failing once it is scheduled.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

from runyard.errors import InvalidArgument

if TYPE_CHECKING:
    from runyard.config import Settings


def gpu_count() -> int:
    """The GPUs NVML sees on this machine (0 without a driver or ``nvidia-ml-py``)."""
    from runyard.sdk.sampler import Gpus

    gpus = Gpus()
    try:
        return len(gpus.handles)
    finally:
        gpus.close()


def elsewhere(settings: Settings) -> int:
    """The most GPUs any machine serving this database has said it has (its agent's lease, live or
    lapsed, as the scheduler reads them); 0 when no agent has said."""
    from runyard.store.claims_sql import AGENT_LEASE
    from runyard.store.home import open_store

    opened = open_store(settings)
    try:
        counts = []
        for lease, _ in opened.store.leases(AGENT_LEASE):
            try:
                counts.append(int(lease.info.get("gpus") or 0))
            except (TypeError, ValueError):
                continue  # written by another version: not a machine we can judge
        return max(counts, default=0)
    finally:
        opened.close()


def refuse_unavailable(settings: Settings, wanted: int, asked_by: str) -> None:
    """Raise InvalidArgument unless this machine, or another serving the database, has ``wanted`` GPUs."""
    if wanted <= 0:
        return
    here = gpu_count()
    if wanted <= here or wanted <= elsewhere(settings):
        return
    has = f"{here} GPU{'s' if here != 1 else ''}" if here else "no GPUs"
    raise InvalidArgument(
        f"{asked_by} {wanted}: this machine ({socket.gethostname()}) has {has} (as NVML counts them) and no "
        f"other machine serving this database has {wanted}. Launch the run from a machine with the GPUs (its "
        "agent runs it), send it to a Ray cluster that has them (--on ray), or ask for fewer."
    )
