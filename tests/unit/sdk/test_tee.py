"""Teeing: the user sees every byte; the log keeps lines, and a progress bar's final state."""

from __future__ import annotations

import io

from runyard.sdk.tee import MAX_LINE, Tee


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


def test_an_overlong_line_reaches_the_terminal_whole_and_the_log_cut() -> None:
    original = io.StringIO()
    kept: list[tuple] = []
    tee = Tee(original, "stderr", kept.append)
    tee.write("x" * (3 * MAX_LINE) + "\n")
    assert len(original.getvalue()) == 3 * MAX_LINE + 1
    assert len(kept) == 1 and kept[0][4].startswith("x" * MAX_LINE) and f"{2 * MAX_LINE:,} more" in kept[0][4]
