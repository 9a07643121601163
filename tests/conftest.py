"""Fixtures shared by the browser tests: ``browser`` (Debian's Chromium through Playwright, one
for the session, its contexts closed after each test module) and ``server`` (a playground
server on 127.0.0.1 in a background thread, one per test module). A module that needs another
server (a memory limit) defines its own.

A second process does work ahead for the session (helpers.background): it compiles Numba's probe
kernels into their cache while the tests are collected, then computes the quick reproductions
that test_reproduce.py pins. Under pytest-xdist (``make test``: ``pytest -n``) the controller
starts it, the workers share its folder and wait, after their collection, for the kernels it
compiles (two processes, one dtype each) instead of each compiling them.

A pytest-xdist worker runs torch on one intra-op thread (:func:`_one_torch_thread`): two
workers on two cores each with torch's default pool (a thread per core) oversubscribed the
machine. NumPy's BLAS pool is left as it is (depthlab.threads chooses it, and tests check it).

Before collection each process caches pytest's rewrite of its share of the test modules
(helpers.assertcache: rewriting the asserts was two thirds of the collection's CPU, done by
every worker at every run under ``PYTHONDONTWRITEBYTECODE``).

Once collected, the objects every test shares (the imported modules, torch, matplotlib, Dask,
pytest's items) are set aside from Python's cyclic garbage collector (:func:`_set_aside`:
``gc.freeze()``): a full collection traverses every tracked object, and a worker's heap after
collecting all of the suite's modules made each one cost most of a second, tens of times per
worker. Garbage the tests make is collected as before.

Under ``--dist loadfile`` the controller hands out the costliest test file first
(helpers.schedule: the seconds each file took in the last run, else the committed
``filecosts.json``), not the file with the most tests first: a few slow files left for the end
ran alone on one worker while the others idled.
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import warnings

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


USER_THREAD_VARS = ("DEPTHLAB_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                    "MKL_NUM_THREADS")
"""The environment's thread settings (depthlab.threads.user_threads reads them as the user's):
with one set, the workers' torch keeps the thread count it gives."""
_torch_threads: dict[str, bool] = {"one": False}


def _one_torch_thread() -> None:
    """torch on one intra-op thread in this process once it is imported (collection imports
    most test modules' torch; a test may import it later, or a command may set its own count):
    ``torch.set_num_threads(1)`` where :func:`pytest_sessionstart` decided so. Not an
    environment variable: OMP_NUM_THREADS would read as the user's setting to the code under
    test, and to the commands the tests start."""
    torch = sys.modules.get("torch") if _torch_threads["one"] else None
    if torch is not None and torch.get_num_threads() != 1:
        torch.set_num_threads(1)


def one_torch_thread_wanted(config, environ) -> bool:
    """A pytest-xdist worker shares the cores with the other workers: torch's default pool (a
    thread per core) in each oversubscribes them. The user's thread setting wins."""
    return _xdist_worker(config) and not any(environ.get(v, "").strip()
                                             for v in USER_THREAD_VARS)


def pytest_sessionstart(session):
    from helpers import background

    _torch_threads["one"] = one_torch_thread_wanted(session.config, os.environ)
    if _xdist_worker(session.config):
        background.attach()  # the controller's background processes
    else:
        background.start(workers=session.config.pluginmanager.hasplugin("dsession"))


@pytest.hookimpl(tryfirst=True)
def pytest_collection(session):
    """This process's share of the test modules' rewritten asserts cached before it collects
    them (not in pytest-xdist's controller, which collects nothing)."""
    from helpers import assertcache

    if not session.config.pluginmanager.hasplugin("dsession"):
        try:
            assertcache.warm(session.config)
        except Exception as exc:  # pytest's private rewrite API changed: collect as before
            warnings.warn(f"assert-rewrite cache not written: {type(exc).__name__}: {exc}",
                          stacklevel=1)


def _set_aside() -> None:
    """The objects alive now moved out of the cyclic collector's reach (``gc.collect()``, then
    ``gc.freeze()``): the cost of a full collection is proportional to the tracked objects
    it traverses, and after collection those are mostly the session's (modules, their
    constants, pytest's items), which live until the session ends. Only what is alive is
    frozen (the garbage is collected first), and objects created later are collected as
    always; a frozen object whose last reference goes is still freed by its reference count."""
    gc.collect()
    gc.freeze()


def pytest_collection_finish(session):
    from helpers import background

    background.plan([] if session.config.option.collectonly else session.items)
    if _xdist_worker(session.config):
        background.wait_warm()  # the kernels compiled once, not by every worker
    _one_torch_thread()
    _set_aside()


def pytest_runtest_setup(item):
    _one_torch_thread()  # a torch imported, or its count changed, by an earlier test


@pytest.hookimpl(trylast=True)  # after the test's fixtures are torn down
def pytest_runtest_teardown(item, nextitem):
    if not gc.get_freeze_count():  # a test called gc.unfreeze() (test_sweep.py): again
        _set_aside()


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """``--dist loadfile``: the costliest file first (helpers.schedule); other modes as
    pytest-xdist has them."""
    if config.getvalue("dist") != "loadfile":
        return None
    from helpers.schedule import CostFirstScheduling

    return CostFirstScheduling(config, log)


_file_seconds: list[tuple[str, float]] = []  # (node id, seconds) of each report, controller


def pytest_runtest_logreport(report):
    _file_seconds.append((report.nodeid, report.duration))


def pytest_sessionfinish(session, exitstatus):
    from helpers import background

    background.stop()
    config = session.config
    if (config.pluginmanager.hasplugin("dsession") and not config.option.keyword
            and not config.option.markexpr):  # a whole file's seconds, for the next order
        from helpers import schedule  # (imports pytest-xdist, here running)

        schedule.record(config, schedule.totals(_file_seconds))
