"""Run ids sort by creation time, even within one millisecond."""

from __future__ import annotations

import re

from runyard.ids import new_ulid


def test_ids_are_ulids_in_creation_order() -> None:
    ids = [new_ulid() for _ in range(2000)]
    assert all(re.fullmatch(r"[0-9A-HJKMNP-TV-Z]{26}", i) for i in ids)
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
