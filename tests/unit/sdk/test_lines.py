"""Output to log lines as a terminal shows them: shared by the SDK's tee and the supervisor's pipes."""

from __future__ import annotations

import io

from runyard.sdk.lines import MAX_LINE, Lines, pump


def capture(limit: int = MAX_LINE) -> tuple[Lines, list[str]]:
    kept: list[str] = []
    return Lines(lambda _now, text: kept.append(text), limit), kept


def test_a_carriage_return_redraws_the_line_in_whatever_pieces_it_comes() -> None:
    lines, kept = capture()
    for piece in ["\repoch 1:  10%", "\repoch 1:  5", "0%\r", "epoch 1: 100%", "\n", "next\r\n", "a\r", "\r", "b\n"]:
        lines.feed(piece)
    assert kept == ["epoch 1: 100%", "next", "b"]
    lines.feed("progress 50%\r")
    lines.feed("\n")  # a bar that ends with its carriage return keeps its last state
    assert kept[-1] == "progress 50%"


def test_an_overlong_line_is_cut_and_says_how_much_and_nothing_grows() -> None:
    lines, kept = capture(limit=10)
    for _ in range(1000):
        lines.feed("x" * 1000)
        assert lines._size <= 10  # the line being built never holds more than the limit
    lines.feed("\nshort\n")
    assert kept == ["xxxxxxxxxx [runyard: line cut at 10 characters; 999,990 more not kept]", "short"]
    lines.feed("y" * 20 + "\rredrawn\n")  # a redraw starts over: nothing of the cut line remains
    assert kept[-1] == "redrawn"


def test_close_ends_an_unfinished_line() -> None:
    lines, kept = capture()
    lines.feed("no newline")
    lines.close()
    lines.close()
    assert kept == ["no newline"]


class Trickle(io.RawIOBase):
    """A pipe that hands out one byte per read, splitting every multi-byte character."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        chunk, self.data = self.data[:1], self.data[1:]
        return chunk


def test_a_pipe_is_read_in_chunks_and_decoded_across_their_boundaries() -> None:
    lines, kept = capture()
    pump(Trickle("héllo wörld\r€ 100%\n".encode() + b"bad \xff byte"), lines)
    assert kept == ["€ 100%", "bad \ufffd byte"]
    lines2, kept2 = capture()
    pump(io.BytesIO(b"one\ntwo"), lines2)
    assert kept2 == ["one", "two"]
