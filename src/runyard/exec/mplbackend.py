"""The matplotlib backend of launched runs: ``plt.show()`` saves the figures instead of losing them.

A launched run has no display, so under matplotlib's usual non-interactive backend ``plt.show()``
does nothing and a script's figures vanish. The supervisor copies this file into the run's
directory as ``runyard_mplbackend.py``, adds that directory to ``PYTHONPATH`` and sets
``MPLBACKEND=module://runyard_mplbackend`` (unless ``--env MPLBACKEND=...`` says otherwise), so it
loads even in a Python that has matplotlib but not runyard. ``show()`` saves each open figure as
``figures/figure-001.png``, ``figure-002.png``... in the working directory, numbered across calls,
so they are kept as the run's outputs, and says so on stderr (the run's log). Then it closes them,
as closing the windows of an interactive ``show()`` would.

matplotlib imports this module only when it loads the backend, so nothing here runs without it.
It must import nothing of runyard's: it runs where runyard may not be installed.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from matplotlib._pylab_helpers import Gcf
from matplotlib.backend_bases import FigureManagerBase
from matplotlib.backends.backend_agg import FigureCanvasAgg

#: Where figures go, relative to the working directory.
FIGURES = Path("figures")

FigureCanvas = FigureCanvasAgg
FigureManager = FigureManagerBase


def show(*args: Any, **kwargs: Any) -> None:
    """Save every open figure as the next ``figures/figure-NNN.png``, then close them."""
    for manager in Gcf.get_all_fig_managers():
        path = _next_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        manager.canvas.figure.savefig(path)
        print(f"runyard: plt.show(): figure {manager.num} saved as {path}", file=sys.stderr, flush=True)
    Gcf.destroy_all()


def _next_path() -> Path:
    # The first free number, so figures from several processes or calls never overwrite each other.
    number = 1
    while (path := FIGURES / f"figure-{number:03d}.png").exists():
        number += 1
    return path
