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
WAIT_MS = 60_000
"""Playwright's default wait (its own is 30 s): a page waits on the playground's server, which
on a loaded 2-core host took more than 30 s to answer a setup changed four times in a row (a
stopped session builds its network first). A wait with a timeout of its own keeps it."""
ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


@contextmanager
def chromium() -> Iterator:
    """A headless Chromium browser (Playwright ``Browser``), closed on exit."""
    from playwright import sync_api

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (see .ci/run)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, timeout=WAIT_MS)
        new_context = b.new_context

        def waiting_context(*args, **kwargs):  # every page of the tests waits up to WAIT_MS
            context = new_context(*args, **kwargs)
            context.set_default_timeout(WAIT_MS)
            return context

        b.new_context = waiting_context
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


@contextmanager
def checked_page(browser, width: int = 1300, height: int = 950, console: bool = True) -> Iterator:
    """A page in a fresh browser context of ``width`` x ``height``; on exit the context is
    closed and the test fails if the page raised (``pageerror``) or, with ``console``, logged
    an error to its console."""
    context = browser.new_context(viewport={"width": width, "height": height})
    pg = context.new_page()
    problems: list[str] = []
    pg.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    if console:
        pg.on("console", lambda m: problems.append(f"console: {m.text}")
              if m.type == "error" else None)
    try:
        yield pg
    finally:
        context.close()
    assert not problems, problems


def url_param(pg, key: str) -> str | None:
    """The value of ``key`` in the page's URL query (None when absent)."""
    return pg.evaluate("k => new URLSearchParams(location.search).get(k)", key)


def hold_server_messages(page) -> None:
    """The playground server's messages are kept back from the page (``HELD``) until the test
    delivers them (a slow network, or a loaded host, orders them so):
    ``deliverThrough(pred)`` up to the first one ``pred`` holds for, ``deliverStates(n)`` up to
    the n-th state message held, ``releaseAll()`` the rest and every later one;
    ``heldHas(pred)``, ``heldStates()`` look at what is held. Logs: ``SHOWN``, the state label
    after each delivered message; ``ACCEPTED``, the widths of the setups the page is told are
    accepted, in order."""
    page.evaluate("""() => {
        window.HELD = []; window.SHOWN = []; window.ACCEPTED = []; let holding = true;
        const h = handle;
        window.handle = (m) => { if (m.type === 'accepted') ACCEPTED.push(m.query['model.width']);
            h(m); };
        const d = S.ws.onmessage;
        const deliver = (ev) => { d(ev);
            SHOWN.push(document.getElementById('state').textContent.toLowerCase()); };
        S.ws.onmessage = (ev) => { if (holding) HELD.push(ev); else deliver(ev); };
        window.heldHas = (pred) => HELD.some((ev) => pred(JSON.parse(ev.data)));
        window.deliverThrough = (pred) => { while (HELD.length) { const ev = HELD.shift();
            deliver(ev); if (pred(JSON.parse(ev.data))) return; } };
        window.releaseAll = () => { holding = false; while (HELD.length) deliver(HELD.shift()); };
        window.heldStates = () => HELD.filter((ev) => JSON.parse(ev.data).type === 'state').length;
        window.deliverStates = (n) => { for (let i = 0; i < n; i++)
            deliverThrough((m) => m.type === 'state'); };
    }""")
