"""A progress bar for bytes on their way somewhere (`runyard run` storing big files, `runyard cp`
bringing them back): shown on a terminal, for 8 MiB or more, and never imported otherwise."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

#: Less than this goes by too fast for a bar to help.
SHOW_FROM = 8 << 20


@contextmanager
def transfer_bar(description: str) -> Iterator[Callable[[int, int], None]]:
    """Yield ``advance(done, total)``: bytes moved so far and of how many. The bar appears once
    ``total`` reaches SHOW_FROM, on a terminal only, and leaves no line behind."""
    if not sys.stderr.isatty():
        yield _nothing
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

    progress = Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                        TransferSpeedColumn(), TimeRemainingColumn(), transient=True,
                        console=Console(file=sys.stderr))
    task = None

    def advance(done: int, total: int) -> None:
        nonlocal task
        if task is None:
            if total < SHOW_FROM:
                return
            progress.start()
            task = progress.add_task(description, total=total)
        progress.update(task, completed=done, total=total)

    try:
        yield advance
    finally:
        if task is not None:
            progress.stop()


def _nothing(done: int, total: int) -> None:
    pass
