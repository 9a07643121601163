"""Round 48 (playhunt48): the playground and the reports as a person sees them: keyboard-only
use, screen readers' names, narrow and wide windows, reports of many layers and long names.
Each test failed before its fix. Screenshots go to a temporary folder
(``DEPTHLAB_SCREENSHOTS=DIR`` keeps them in DIR)."""

from __future__ import annotations

import pytest
from helpers.browser import checked_page, screenshot_dir

from depthlab.playground.server import Background

MEASURED = "document.getElementById('grad-summary').dataset.step !== ''"


@pytest.fixture(scope="module")
def server():
    with Background(memory_limit=256 * 2**20) as bg:
        yield bg


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    return screenshot_dir(tmp_path_factory.mktemp("playhunt48"))


@pytest.fixture()
def page(browser, server):
    with checked_page(browser) as pg:
        yield pg


def _legend_state(pg, plot: str) -> list[list]:
    """[label, aria-pressed, drawn (no u-off)] of each legend entry of ``plot`` shown."""
    return pg.evaluate("""(plot) => [...document.querySelectorAll(`#${plot} .u-legend .u-series`)]
      .filter((r) => r.style.display !== 'none')
      .map((r) => [r.textContent.trim(), r.getAttribute('aria-pressed'),
                   !r.classList.contains('u-off')])""", plot)


EVO_SERIES = """() => [...document.querySelectorAll('#plot-evo .u-legend .u-series')]
  .map((r) => [r.textContent.trim(), !r.classList.contains('u-off')])"""


# -- the plots' legends by keyboard --------------------------------------------------------------

def test_a_plots_legend_entries_are_toggle_buttons_the_keyboard_reaches_and_presses(page, server):
    """A click on a legend entry hides its line (uPlot); Tab never reached the entries and a
    screen reader did not hear a button. Each is a named toggle button now: Enter hides the
    line, Space shows it again (and does not play the network)."""
    page.goto(server.url)
    page.wait_for_function(MEASURED)
    now = page.locator("#plot-grad").get_by_role("button", name="now")
    assert now.count() == 1
    assert now.get_attribute("aria-pressed") == "true"
    page.focus("#share")  # the last control: Tab goes on into the panels
    for _ in range(8):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.closest('#plot-grad') !== null"):
            break
    assert page.evaluate("document.activeElement.textContent.trim()") == "now"
    page.keyboard.press("Enter")
    assert _legend_state(page, "plot-grad")[0] == ["now", "false", False]
    page.keyboard.press(" ")
    assert _legend_state(page, "plot-grad")[0] == ["now", "true", True]
    assert page.evaluate("document.body.dataset.state") == "paused"
    page.keyboard.press(" ")  # the entry again, not play
    page.keyboard.press(" ")
    assert page.evaluate("document.body.dataset.state") == "paused"


def test_hiding_a_layer_in_the_activations_over_training_legend_hides_its_std_lines(page, server):
    """The evolution plot's dashed mean ± std lines have no legend entries of their own: hiding a
    layer's mean from the legend left its two dashed lines drawn."""
    page.goto(server.url)
    page.wait_for_function(MEASURED)
    first = page.locator("#plot-evo .u-legend .u-series th").first
    label = first.text_content().strip()
    first.click()
    series = dict(page.evaluate(EVO_SERIES))
    layer = label.split()[-1]
    assert series[label] is False
    assert (series[f"+std {layer}"], series[f"-std {layer}"]) == (False, False), series
    first.click()
    series = dict(page.evaluate(EVO_SERIES))
    assert series[label] and series[f"+std {layer}"] and series[f"-std {layer}"]


# -- Escape ----------------------------------------------------------------------------------------

def test_escape_cancels_a_running_doctor_wherever_the_focus_is(page, server):
    """Escape did nothing: a keyboard user had to Tab to the doctor's cancel button (below every
    panel on a phone). Escape now cancels a running doctor, the focus in a control."""
    page.goto(server.url + "?model.depth=40")
    page.wait_for_function(MEASURED)
    page.focus("#doctor")
    page.keyboard.press("Enter")
    page.wait_for_selector("#doctor-cancel")
    page.focus("#f-model-width")
    page.keyboard.press("Escape")
    page.wait_for_function("document.getElementById('doctor-out').textContent"
                           ".includes('the doctor was cancelled')", timeout=20_000)
    assert not page.is_disabled("#doctor")
    assert page.input_value("#f-model-width") == "32"  # Escape typed nothing into the control


# -- what a screen reader hears ------------------------------------------------------------------

def test_the_training_state_is_a_live_status_a_screen_reader_hears_change(page, server):
    """Play pressed from the keyboard changed the state shown (paused -> running) in a plain
    span: a screen reader said nothing. The state is a status (a polite live region) now."""
    page.goto(server.url)
    page.wait_for_function(MEASURED)
    assert page.get_by_role("status").filter(has_text="paused").count() == 1
    page.focus("#play")
    page.keyboard.press("Enter")
    page.wait_for_function("document.body.dataset.state === 'running'")
    assert page.get_by_role("status").filter(has_text="running").count() == 1
    page.keyboard.press("Tab")  # pause
    page.keyboard.press("Enter")
    page.wait_for_function("document.body.dataset.state === 'paused'")


# -- reports -------------------------------------------------------------------------------------

def _overlay_captions(html: str) -> list[str]:
    import re

    return re.findall(r'<img alt="(?:gradient|activation) std per layer for every run"[^>]*>'
                      r"<figcaption>(.*?)</figcaption>", html)


def test_a_sweeps_overlay_captions_say_the_legends_order(tmp_path):
    """A 3-axis sweep's overlay legend listed its runs best first (the gradient-flow table's
    order) without saying so: to a reader, combinations in no order. Both overlay captions say
    the order now; a one-run section's do not."""
    from test_report import synthetic_record

    from depthlab.experiments.store import Store
    from depthlab.report import write_report

    with Store(tmp_path / "sweep") as store:
        for k, (depth, lr, acc) in enumerate([(2, 0.01, 0.6), (2, 0.1, 0.9), (4, 0.01, 0.7)]):
            store.add_run(synthetic_record(f"r{k}", depth=depth, lr=lr, val_acc=acc,
                                           histograms=False))
    caps = _overlay_captions(write_report(tmp_path / "sweep").read_text())
    assert len(caps) == 2, caps
    for cap in caps:
        assert "The legend lists the runs best first" in cap, cap
    with Store(tmp_path / "one") as store:
        store.add_run(synthetic_record("solo", sweep="s1", histograms=False))
    for cap in _overlay_captions(write_report(tmp_path / "one").read_text()):
        assert "legend lists" not in cap, cap
