"""The browser tests' Chromium (Debian's): where a test module needs it, `require_chromium()` at its top
skips it when the browser is missing, or fails it where the browser is required (CI); `browser` is a
module's one headless Chromium."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")


def require_chromium() -> None:
    if not CHROMIUM.exists():
        message = "Debian's chromium is not installed: run `apt-get install chromium` (as root)"
        if os.environ.get("METERING_REQUIRE_BROWSER"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message, allow_module_level=True)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        yield b
        b.close()
