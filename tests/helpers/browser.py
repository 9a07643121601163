"""Debian's Chromium driven by Playwright for Python (its own browser download is unreachable
here): ``with chromium() as browser: page = browser.new_page()``. The browser tests fail, not
skip, without /usr/bin/chromium: `.ci/run` installs it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


@contextmanager
def chromium() -> Iterator:
    """A headless Chromium browser (Playwright ``Browser``), closed on exit."""
    from playwright import sync_api

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (see .ci/run)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield b
        finally:
            b.close()


def screenshot_dir(fallback: Path) -> Path:
    """Where a test saves its screenshots: ``$DEPTHLAB_SCREENSHOTS`` when set (to keep and look
    at them), else ``fallback`` (a temporary folder); created."""
    keep = os.environ.get("DEPTHLAB_SCREENSHOTS")
    path = Path(keep) if keep else fallback
    path.mkdir(parents=True, exist_ok=True)
    return path
