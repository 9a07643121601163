"""Fixtures shared by the browser tests: ``browser`` (Debian's Chromium through Playwright, one
per test module) and ``server`` (a playground server on 127.0.0.1 in a background thread, one
per test module). A module that needs another server (a memory limit) defines its own.

A second process does work ahead for the session (helpers.background): it compiles Numba's probe
kernels into their cache while the tests are collected, then computes the quick reproductions
that test_reproduce.py pins."""

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


def pytest_sessionstart(session):
    from helpers import background

    background.start()


def pytest_collection_finish(session):
    from helpers import background

    background.plan([] if session.config.option.collectonly else session.items)


def pytest_sessionfinish(session, exitstatus):
    from helpers import background

    background.stop()
