"""The dashboard tests' browser: Debian's chromium driven by Playwright (never a
downloaded browser; .ci/run installs it with apt)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser
from ui_helpers import CHROMIUM


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """Chromium from Debian (``apt-get install chromium``; .ci/run installs it)."""
    if not Path(CHROMIUM).exists() or shutil.which(CHROMIUM) is None:
        if os.environ.get("SHOAL_REQUIRE_BROWSER"):
            pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium")
        pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()
