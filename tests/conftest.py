"""Fixtures shared by the browser tests: ``browser`` (Debian's Chromium through Playwright, one
per test module) and ``server`` (a playground server on 127.0.0.1 in a background thread, one
per test module). A module that needs another server (a memory limit) defines its own."""

from __future__ import annotations

import pytest
from helpers.browser import chromium


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:  # fails, as the other browser tests, without /usr/bin/chromium
        yield b


@pytest.fixture(scope="module")
def server():
    from depthlab.playground.server import Background

    with Background() as bg:
        yield bg
