"""Debian's Chromium driven by Playwright (which cannot download browsers here): where it is, the flags
it is started with, and a ``pytest`` mark that skips a test when it is missing."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = os.environ.get("RUNYARD_CHROMIUM", "/usr/bin/chromium")
#: No sandbox (tests run as root), no GPU, and no traffic of the browser's own.
FLAGS = ("--no-sandbox", "--disable-gpu", "--disable-background-networking")

needs_chromium = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                    reason=f"no chromium at {CHROMIUM} (scripts/ensure-chromium)")


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """A running Chromium (a Playwright ``Browser``), closed on leaving."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=list(FLAGS))
        try:
            yield browser
        finally:
            browser.close()
