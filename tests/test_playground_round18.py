"""Round 18 of adversarial playground testing (a teacher projecting the page to a class and a
learner, in a real browser).

* the weight update ratio panel, titled "||dW|| / ||W|| per step", showed while training ran
  the net displacement of the weights over the ~100-200 steps between two measurements divided
  by their number: 5.6e-4 for the first layer of the default setup, where one step moved it by
  2.9e-3 (the value the page showed once paused and stepped, and the one ``depthlab run``
  records); the factor depended on how fast the machine trained;

Browser tests use Debian's Chromium (they fail, not skip, without it); screenshots go to a
temporary folder (``DEPTHLAB_SCREENSHOTS=DIR`` keeps them in DIR).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from helpers.browser import checked_page, screenshot_dir

MEASURED = "document.getElementById('grad-summary').dataset.step !== ''"


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    return screenshot_dir(tmp_path_factory.mktemp("round18_screenshots"))


@pytest.fixture()
def page(browser, server):
    with checked_page(browser) as pg:
        yield pg


# -- the update ratio is that of one step ----------------------------------------------------
def test_the_update_ratio_drawn_while_training_is_that_of_one_step(page, server, shots):
    page.goto(server.url)
    page.wait_for_function(MEASURED, timeout=30_000)
    # every update the page draws, as it arrives
    page.evaluate("""() => { window.seen = []; const h = handle;
        window.handle = (m) => { h(m); if (m.type === 'update') window.seen.push(
            [m.step, m.update_since, S.plots['plot-update'].data[1].slice(),
             m.update_ratio.slice()]); }; }""")
    page.click("#play")
    page.wait_for_function("window.seen.filter((s) => s[0] > 50).length >= 4", timeout=30_000)
    page.click("#pause")
    page.wait_for_selector("body[data-state=paused]")
    page.wait_for_timeout(300)  # the measurement of the step it paused at
    page.locator("#panel-update").screenshot(path=str(shots / "round18_update_ratio.png"))
    seen = page.evaluate("window.seen")
    running = [s for s in seen if s[0] > 1]
    assert len(running) >= 4, seen
    for step, since, drawn, ratio in running:
        # was: since 2419 at step 2507 (the displacement over 88 steps / 88)
        assert since == step - 1, (step, since)
        # and the panel draws those numbers
        assert [None if v is None else round(v, 9) for v in drawn] == \
            [None if not v else round(math.log10(v), 9) for v in ratio]
    # paused: the page shows the step training stopped at, and that step's own ratio
    step, since = page.evaluate("[S.last.step, S.last.update_since]")
    assert since == step - 1, (step, since)
