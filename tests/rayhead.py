"""Stopping one Ray head and its processes, and no other: `ray stop` ends every Ray process of the
machine (another test session's cluster too). A head started with ``--temp-dir D`` names D in the
command line of each of its processes (GCS, raylet, dashboard, workers); those and their children
go. Shared by the tests' cluster fixture and bench/scale.py's Ray section."""

from __future__ import annotations

from pathlib import Path


def stop_head(temp_dir: Path, timeout: float = 10.0) -> int:
    """End the processes of the Ray head whose temp dir is ``temp_dir``; returns how many."""
    import psutil

    marker = str(temp_dir)
    doomed: dict[int, psutil.Process] = {}
    everyone = list(psutil.process_iter(["cmdline"]))
    for process in everyone:
        try:
            if any(part.endswith(marker) or marker + "/" in part for part in process.info["cmdline"] or []):
                doomed[process.pid] = process
                doomed.update((child.pid, child) for child in process.children(recursive=True))
        except psutil.Error:
            continue
    # Ray's client server names neither the temp dir nor a parent of the head (it is re-parented to
    # init), only the head's GCS address, which the dashboard names too.
    gcs = {part.split("=", 1)[1] for process in everyone if process.pid in doomed
           for part in process.info["cmdline"] or [] if part.startswith("--gcs-address=")}
    for process in everyone:
        if any(part.split("=", 1)[1] in gcs for part in process.info["cmdline"] or [] if part.startswith("--address=")):
            doomed[process.pid] = process
    for process in doomed.values():
        try:
            process.terminate()
        except psutil.Error:
            continue
    _, alive = psutil.wait_procs(list(doomed.values()), timeout=timeout)
    for process in alive:
        try:
            process.kill()
        except psutil.Error:
            continue
    return len(doomed)
