from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from tests.browser import chromium


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One Chromium for a module's tests (each makes contexts of its own)."""
    with chromium() as b:
        yield b
