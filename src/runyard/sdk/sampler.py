"""Hardware sampling: CPU, memory, disk and network use of a process tree, and GPUs through NVML.

A daemon thread samples every ``interval`` seconds and emits one metrics record of ``system/...``
keys (step = sample number). psutil and NVML (``pynvml``, from nvidia-ml-py) are imported when the
thread starts, never at import. The supervisor reuses this for the processes it starts.

Keys: ``system/cpu_percent`` (of one core, summed over the tree), ``system/rss_mb``,
``system/memory_percent`` (of the machine), ``system/disk_read_mb_s``, ``system/disk_write_mb_s``
(the tree's I/O), ``system/net_sent_mb_s``, ``system/net_recv_mb_s`` (the machine's), and per GPU
``system/gpu<i>/utilization``, ``memory_percent``, ``power_w``, ``temperature_c``.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from runyard.spool import records

MB = 1024 * 1024


class Gpus:
    """NVML, if a driver and at least one GPU are there."""

    def __init__(self) -> None:
        self.nvml: Any = None
        self.handles: list[Any] = []
        try:
            import pynvml

            pynvml.nvmlInit()
            self.handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
            self.nvml = pynvml
        except Exception:  # noqa: BLE001 - no NVML, no driver or no GPU: sample the rest
            self.handles = []

    def sample(self) -> dict[str, float]:
        out: dict[str, float] = {}
        nvml = self.nvml
        for i, handle in enumerate(self.handles):
            prefix = f"system/gpu{i}/"
            for key, read in (
                ("utilization", lambda h: nvml.nvmlDeviceGetUtilizationRates(h).gpu),
                ("memory_percent", lambda h: _percent(nvml.nvmlDeviceGetMemoryInfo(h))),
                ("power_w", lambda h: nvml.nvmlDeviceGetPowerUsage(h) / 1000.0),
                ("temperature_c", lambda h: nvml.nvmlDeviceGetTemperature(h, nvml.NVML_TEMPERATURE_GPU)),
            ):
                try:
                    out[prefix + key] = float(read(handle))
                except Exception:  # noqa: BLE001, S112 - a GPU without power readings, say
                    continue
        return out

    def close(self) -> None:
        if self.nvml is not None:
            with contextlib.suppress(Exception):
                self.nvml.nvmlShutdown()


def _percent(info: Any) -> float:
    return 100.0 * info.used / info.total if info.total else 0.0


class Sampler:
    def __init__(self, interval: float, emit: Callable[[Any], None], pid: int | None = None) -> None:
        self.interval = interval
        self._emit = emit
        self._pid = pid or os.getpid()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="runyard-sampler", daemon=True)
        self.samples = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=2)

    def _loop(self) -> None:
        import psutil

        try:
            root = psutil.Process(self._pid)
        except psutil.Error:
            return  # the process ended before its first sample (a command that could not start)
        known: dict[int, Any] = {}
        gpus = Gpus()
        previous: tuple[float, float, float, float, float] | None = None
        try:
            while True:
                values, counters = self._sample(psutil, root, known, gpus)
                if previous is not None:
                    elapsed = max(counters[0] - previous[0], 1e-6)
                    for key, now, before in zip(
                        ("system/disk_read_mb_s", "system/disk_write_mb_s", "system/net_sent_mb_s",
                         "system/net_recv_mb_s"), counters[1:], previous[1:], strict=True,
                    ):
                        values[key] = max(now - before, 0.0) / MB / elapsed
                previous = counters
                self._emit((values, records.UNNUMBERED, time.time(), self.samples))
                self.samples += 1
                if self._stop.wait(self.interval):
                    return
        except Exception:  # noqa: BLE001 - the process went away: stop sampling quietly
            return
        finally:
            gpus.close()

    def _sample(self, psutil: Any, root: Any, known: dict[int, Any],
                gpus: Gpus) -> tuple[dict[str, Any], tuple[float, float, float, float, float]]:
        procs = [root]
        with contextlib.suppress(psutil.Error):
            procs += root.children(recursive=True)
        cpu = rss = read = write = 0.0
        alive = set()
        for proc in procs:
            tracked = known.setdefault(proc.pid, proc)  # keep the object: cpu_percent needs its history
            alive.add(proc.pid)
            try:
                with tracked.oneshot():
                    cpu += tracked.cpu_percent(None)
                    rss += tracked.memory_info().rss
                    io = tracked.io_counters() if hasattr(tracked, "io_counters") else None
                    if io is not None:
                        read += io.read_bytes
                        write += io.write_bytes
            except psutil.Error:
                continue
        for pid in list(known):
            if pid not in alive:
                del known[pid]
        net = psutil.net_io_counters()
        values = {
            "system/cpu_percent": cpu,
            "system/rss_mb": rss / MB,
            "system/memory_percent": float(psutil.virtual_memory().percent),
            **gpus.sample(),
        }
        sent, received = (float(net.bytes_sent), float(net.bytes_recv)) if net else (0.0, 0.0)
        counters = (time.monotonic(), read, write, sent, received)
        return values, counters
