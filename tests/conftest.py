"""Fixtures shared by the browser tests: ``browser`` (Debian's Chromium through Playwright, one
for the session, its contexts closed after each test module) and ``server`` (a playground
server on 127.0.0.1 in a background thread, one per test module). A module that needs another
server (a memory limit) defines its own.

A second process does work ahead for the session (helpers.background): it compiles Numba's probe
kernels into their cache while the tests are collected, then computes the quick reproductions
that test_reproduce.py pins. Under pytest-xdist (``make test``: ``pytest -n``) the controller
starts it, the workers share its folder and wait, after their collection, for the kernels it
compiles (two processes, one dtype each) instead of each compiling them."""

from __future__ import annotations

import asyncio

import pytest
from helpers.browser import chromium


@pytest.fixture(scope="session")
def _chromium():
    """One Chromium for the session (a launch is Playwright's driver and the browser started
    anew: 1.5-3 s, once per browser module before): the browser and Playwright's event loop."""
    with chromium() as b:  # fails, as the other browser tests, without /usr/bin/chromium
        loop = asyncio.get_running_loop()  # Playwright marks its loop running between calls
        try:
            yield b, loop
        finally:
            asyncio._set_running_loop(loop)  # for the close (Playwright's calls need it)


@pytest.fixture(scope="module")
def browser(_chromium):
    """The session's Chromium for one module: every context it opened is closed when the
    module ends, and between browser modules Playwright's loop is not marked running in this
    thread (the tests in between may run event loops of their own, as they always could)."""
    b, loop = _chromium
    asyncio._set_running_loop(loop)
    try:
        yield b
    finally:
        for context in list(b.contexts):
            context.close()
        asyncio._set_running_loop(None)


@pytest.fixture(scope="module")
def server():
    from depthlab.playground.server import Background

    with Background() as bg:
        yield bg


def _xdist_worker(config) -> bool:
    """Whether this process is a pytest-xdist worker (``make test`` runs ``pytest -n``)."""
    return hasattr(config, "workerinput")


def pytest_sessionstart(session):
    from helpers import background

    if _xdist_worker(session.config):
        background.attach()  # the controller's background processes
    else:
        background.start(workers=session.config.pluginmanager.hasplugin("dsession"))


def pytest_collection_finish(session):
    from helpers import background

    background.plan([] if session.config.option.collectonly else session.items)
    if _xdist_worker(session.config):
        background.wait_warm()  # the kernels compiled once, not by every worker


def pytest_sessionfinish(session, exitstatus):
    from helpers import background

    background.stop()
