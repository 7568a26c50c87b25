"""``runyard compare``'s table: what differs must look different."""

from __future__ import annotations

from runyard.cli.compare import _texts


def test_values_that_differ_beyond_four_digits_are_shown_in_full() -> None:
    assert _texts([0.1, 0.10001, 0.2]) == ["0.1", "0.10001", "0.2"]
    assert _texts([1.0, 1.0000001]) == ["1.0", "1.0000001"]


def test_values_that_read_alike_and_are_alike_keep_the_short_form() -> None:
    assert _texts([0.123456789, 0.123456789, 2]) == ["0.1235", "0.1235", "2"]
    assert _texts([1, 1.0, None]) == ["1", "1", "-"]  # 1 and 1.0 are the same param
