"""Round 13: what a learner or a teacher sees in the playground and in reports (helper "ui").

* a sweep report's overlay "Gradient std per layer, all runs" of a sweep over batch norm and
  lr (0.0001, 0.01, 10) titled its right panel with three lines ("at the end of training",
  "lr=10, batchnorm=false: step 5, the last finite", "2 runs: layers 1-3: zero ..."): the
  top one was drawn over the figure's title "Back-propagated gradient std per layer", whose
  0.7 in margin holds two; now the figure grows, and its legend starts level with the panels
  (a wide title line ran under it);
* the playground's gradient panel of a one-hidden-layer network named "at init" and "theory"
  in its legend with nothing drawn for them: one point per series, and their dashed lines
  showed no points; now rings around the "now" point;
* its update-ratio panel of a 300-layer ReLU net (He init) left 106 layers out, their
  ||dW|| / ||W|| exactly 0 (updates below float32's resolution of their weights), without a
  word: the note spoke only when every layer's was 0; now it names them;

Browser tests use Debian's Chromium (they fail, not skip, without it); screenshots go to a
temporary folder (``DEPTHLAB_SCREENSHOTS=DIR`` keeps them in DIR).
"""

from __future__ import annotations

import math

import pandas as pd
import pytest
from helpers.browser import checked_page, screenshot_dir

from depthlab import plot


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    return screenshot_dir(tmp_path_factory.mktemp("round13_screenshots"))


@pytest.fixture()
def page(browser, server):
    with checked_page(browser) as pg:
        yield pg


def _grad_table(kind: str) -> pd.DataFrame:
    """grad_pre_std of 3 layers at steps 0, 10, 20: "stale" is NaN at step 20 (a run whose
    probes overflowed), "dead" exactly 0 after step 0 (every ReLU unit died)."""
    rows = []
    for step in (0, 10, 20):
        for layer in (1, 2, 3):
            v = 1e-3 * layer
            if kind == "stale" and step == 20:
                v = math.nan
            if kind == "dead" and step:
                v = 0.0
            rows.append((step, layer, "grad_pre_std", v))
    return pd.DataFrame(rows, columns=["step", "layer", "quantity", "value"])


def test_an_overlays_three_line_panel_title_stays_clear_of_the_figure_title(shots):
    runs = {"lr=10, batchnorm=false": _grad_table("stale"),
            "lr=10, batchnorm=true": _grad_table("dead")}
    fig = plot.gradient_per_layer(runs, theory=False)
    fig.savefig(shots / "round13_overlay_titles.png")
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    heading = fig._suptitle.get_window_extent(r)
    end = fig.axes[1]
    assert end.get_title().count("\n") == 2, end.get_title()
    title = end.title.get_window_extent(r)
    # was: the title's first line 16.8 px over the figure's title
    assert title.y1 < heading.y0, (title, heading)
    legend = fig.legends[0].get_window_extent(r)
    assert not legend.overlaps(title), (legend, title)
    assert heading.y1 <= fig.bbox.y1


MEASURED = "document.getElementById('grad-summary').dataset.step !== ''"
# canvas pixels of a colour (r, g, b within 40 of it) in a uPlot panel
PIXELS = """([id, rgb]) => {
  const c = S.plots[id].ctx.canvas;
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let n = 0;
  for (let i = 0; i < d.length; i += 4) {
    if (d[i + 3] > 200 && Math.abs(d[i] - rgb[0]) < 40 && Math.abs(d[i + 1] - rgb[1]) < 40 &&
        Math.abs(d[i + 2] - rgb[2]) < 40) n++;
  }
  return n;
}"""


def test_one_hidden_layers_init_and_theory_are_drawn(page, server, shots):
    page.goto(server.url + "?model.depth=1")
    page.wait_for_function(MEASURED, timeout=30_000)
    page.locator("#panel-grad").screenshot(path=str(shots / "round13_one_layer_grad.png"))
    # was: one point per series, and a dashed series draws no point: the legend named
    # "at init" and "theory" over a panel with the "now" point alone
    assert page.evaluate(PIXELS, ["plot-grad", [214, 39, 40]]) > 10  # theory, #d62728
    assert page.evaluate(PIXELS, ["plot-grad", [143, 167, 200]]) > 10  # at init, #8fa7c8


def test_layers_whose_weights_did_not_change_are_named_under_the_update_ratio(page, server,
                                                                              shots):
    # 30 sigmoid layers with N(0, 1) weights at lr 0.001: layer 1's update (gradient ~1e-9)
    # is below float32's resolution of its weights, so its ||dW|| / ||W|| is exactly 0
    page.goto(server.url + "?model.depth=30&model.activation=sigmoid&model.init=normal"
              "&train.lr=0.001")
    page.wait_for_function(MEASURED, timeout=30_000)
    page.click("#step")
    page.wait_for_function("S.last && S.last.step >= 1", timeout=30_000)
    ratios = page.evaluate("S.last.update_ratio")
    assert ratios[0] == 0 and all(r > 0 for r in ratios[1:]), ratios
    page.locator("#panel-update").screenshot(path=str(shots / "round13_update_zero.png"))
    note = page.text_content("#update-note")
    # was: "" (a gap at layer 1 without a word; a 300-layer ReLU net had 106 such layers)
    assert note.startswith("layer 1: weights unchanged"), note
