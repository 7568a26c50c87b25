"""Teeing: the user sees every byte; the log keeps lines, and a progress bar's final state."""

from __future__ import annotations

import io

from runyard.sdk.tee import Tee


def test_lines_are_kept_and_carriage_returns_redraw() -> None:
    original = io.StringIO()
    kept: list[tuple] = []
    tee = Tee(original, "stdout", kept.append)
    tee.write("epoch 1 ")
    tee.write("done\nprogress  10%\rprogress  50%\rprogress 100%\n")
    tee.write("partial")
    assert original.getvalue() == "epoch 1 done\nprogress  10%\rprogress  50%\rprogress 100%\npartial"
    assert [r[4] for r in kept] == ["epoch 1 done", "progress 100%"]
    tee.close_line()
    assert [r[4] for r in kept][-1] == "partial" and all(r[3] == "stdout" for r in kept)
