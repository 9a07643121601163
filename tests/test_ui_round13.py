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
* the report's per-layer gradient figure of a one-layer run drew its theory as a dashed line
  through one point (nothing) under the legend's "dashed: theory"; now a ring, and the
  legend and the caption say "ring: theory";
* the gradient histograms of a diverged run's last probe (digits, 3 ReLU layers of 64, lr 5)
  read "layer 1, step 3: all in one bin [0, 0.02]": 486 of its 11,520 entries were NaN,
  which a histogram's counts leave out without a word; now the panel says how many;
* a sweep point at lr 10 whose gradients were exactly 0 in every layer from step 10 on (all
  ReLU units dead) had an empty "ratio at end" cell (0 / 0) beside "flows: within a factor
  1.5 of 1", and the overlay called its step 5 "the last finite" (the zeros after it are
  finite); now "0 / 0: no gradient in any layer", "at the end no gradient at all", and
  "step 5, the last above 0";
* a doctor finding of a 300-layer network listed "1, 2, 3, ..., 300" down the report's
  narrow layers column; now "1-300", as the doctor prints it;
* a refused link (``?model.activation=``) left "waiting for the first measurement" over the
  empty panels, where none comes until a control changes; now it says the setup was refused;
* a sweep's heatmap over lr x batch norm, the only keys the sweep varies, was titled
  "val_acc (best over the other keys)" and captioned "each cell holds the best run of the
  pair", as if runs were hidden; now "(one run per cell)" and "each cell is that pair's run".

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
    page.wait_for_function(MEASURED, timeout=90_000)
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
    page.wait_for_function(MEASURED, timeout=90_000)
    page.click("#step")
    page.wait_for_function("S.last && S.last.step >= 1", timeout=30_000)
    ratios = page.evaluate("S.last.update_ratio")
    assert ratios[0] == 0 and all(r > 0 for r in ratios[1:]), ratios
    page.locator("#panel-update").screenshot(path=str(shots / "round13_update_zero.png"))
    note = page.text_content("#update-note")
    # was: "" (a gap at layer 1 without a word; a 300-layer ReLU net had 106 such layers)
    assert note.startswith("layer 1: weights unchanged"), note


def test_a_histogram_panel_says_how_many_values_were_nan(shots):
    # a diverging ReLU run's last probe (digits, 3 x 64 units, lr 5): layer 1's dL/ds is 0 in
    # 11,034 of 11,520 entries and NaN in 486, its activations all finite
    rows = []
    for step, grad_zero in ((0, None), (3, 11_034)):
        for kind in ("act", "grad"):
            for b in range(10):
                count = 1152
                if kind == "grad" and grad_zero is not None:
                    count = grad_zero if b == 0 else 0
                rows.append((step, 1, kind, b / 10, (b + 1) / 10, count))
    table = pd.DataFrame(rows, columns=["step", "layer", "kind", "bin_left", "bin_right",
                                        "count"])
    fig = plot.activation_histograms(table, kind="grad")
    fig.savefig(shots / "round13_hist_nan.png")
    start, end = (ax.get_title() for ax in fig.axes[:2])
    # was: "layer 1, step 3: all in one bin [0, 0.1]" alone (the NaN left out without a word)
    assert "486 of 11,520 values NaN" in end, end
    assert "NaN" not in start, start
    assert "NaN" not in " ".join(ax.get_title()
                                 for ax in plot.activation_histograms(table, "act").axes)


def test_a_one_layer_runs_theory_is_drawn_in_the_report(shots):
    table = pd.DataFrame([(s, 1, "grad_pre_std", v) for s, v in ((0, 1.2e-3), (85, 1.14e-3))],
                         columns=["step", "layer", "quantity", "value"])
    theory = pd.DataFrame({"layer": [1], "grad_pre_var": [1.0]})
    fig = plot.gradient_per_layer({"one-layer": table}, theory={"one-layer": theory})
    fig.savefig(shots / "round13_one_layer_theory.png")
    line = next(ln for ln in fig.axes[0].lines if ln.get_label().endswith(": theory"))
    # was: a dashed line through one point, which draws nothing, under the legend's
    # "dashed: theory (run's colour)"
    assert line.get_marker() not in ("", "None", None)
    assert "ring: theory (run's colour)" in [t.get_text() for t in fig.legends[0].get_texts()]


def _dead_table() -> pd.DataFrame:
    """A 3-ReLU-layer run at lr 10 (spirals): gradients at init, then layer 3's alone at step
    5 (682), then exactly 0 in every layer to the end (every unit dead)."""
    rows = []
    for step in (0, 5, 10, 44):
        for layer in (1, 2, 3):
            v = 1e-3 * layer if step == 0 else 682.0 if (step, layer) == (5, 3) else 0.0
            rows.append((step, layer, "grad_pre_std", v))
    return pd.DataFrame(rows, columns=["step", "layer", "quantity", "value"])


def test_a_run_whose_gradients_all_died_is_not_said_to_flow(tmp_path):
    from depthlab.experiments.store import RunRecord, Store
    from depthlab.report import write_report

    config = {"data": {"name": "spirals"}, "model": {"sizes": [2, 16, 16, 16, 2]}}
    with Store(tmp_path) as store:
        for rid, lr, probes in (("p0", 10.0, _dead_table()), ("p1", 0.01, _grad_table("ok"))):
            store.add_run(RunRecord(
                id=rid, name=f"lr={lr}", kind="sweep-point", sweep="sw-dead",
                config={**config, "train": {"lr": lr}}, metrics={"val_acc": 0.515, "steps": 44},
                steps=pd.DataFrame({"step": [1, 2], "loss": [0.7, 0.69]}), probes=probes))
        store.add_sweep_points("sw-dead", ["p0", "p1"])
    text = write_report(tmp_path).read_text(encoding="utf-8")
    row = text[text.index("<td>lr=10.0<"):][:600]
    # was: an empty "ratio at end" cell beside "flows: within a factor 3 of 1"
    assert "no gradient in any layer" in row, row
    assert "at the end no gradient at all" in row, row


def test_a_run_whose_gradients_turned_to_zero_is_not_called_not_finite():
    fig = plot.gradient_per_layer({"lr=10": _dead_table()}, theory=False)
    end = fig.axes[1].get_title()
    # was: "lr=10: step 5, the last finite" (the steps after it are zeros, all finite)
    assert "step 5, the last above 0" in end, end
    stale = plot.gradient_per_layer({"a": _grad_table("stale")}, theory=False)
    assert "step 10, the last finite" in stale.axes[1].get_title()


def test_a_deep_networks_finding_lists_its_layers_as_ranges(tmp_path):
    from depthlab.experiments.store import RunRecord, Store
    from depthlab.report import write_report

    finding = {"kind": "vanishing_gradients", "severity": "high", "layers": list(range(1, 301)),
               "message": "the gradient vanishes"}
    with Store(tmp_path) as store:
        store.add_run(RunRecord(id="doc", name="doc", kind="doctor", config={"model": {}},
                                metrics={"steps": 10}, findings={"findings": [finding]}))
    text = write_report(tmp_path).read_text(encoding="utf-8")
    # was: "1, 2, 3, 4, ..., 300" down the table's layers column (the doctor prints 1-300)
    assert '<td data-label="layers">1-300</td>' in text  # (named cells since round 44)
    assert "1, 2, 3" not in text


def test_a_refused_link_does_not_say_it_waits_for_a_measurement(page, server):
    page.goto(server.url + "?model.activation=")
    page.wait_for_selector(".field-error", timeout=30_000)
    # was: "waiting for the first measurement" over empty panels, none ever coming
    assert "refused" in page.text_content("#grad-summary")
    page.select_option("#f-model-activation", "tanh")
    page.wait_for_function(MEASURED, timeout=90_000)
    assert "step 0" in page.text_content("#grad-summary")


def test_a_one_layer_runs_caption_names_the_ring(tmp_path):
    from depthlab.experiments.store import RunRecord, Store
    from depthlab.report import write_report

    probes = pd.DataFrame([(s, 1, "grad_pre_std", v) for s, v in ((0, 1.2e-3), (85, 1.1e-3))],
                          columns=["step", "layer", "quantity", "value"])
    with Store(tmp_path) as store:
        store.add_run(RunRecord(id="one", name="one-layer", config={
            "data": {"name": "spirals"}, "model": {"sizes": [2, 16, 2], "activation": "tanh"}},
            metrics={"steps": 85}, probes=probes))
    text = write_report(tmp_path).read_text(encoding="utf-8")
    # was: "dashed: theory" under a figure whose theory is a ring
    assert "at the end; ring: theory." in text


def test_a_grid_run_once_per_cell_is_not_said_to_show_the_best_of_other_keys(tmp_path):
    from depthlab.experiments.store import RunRecord, Store
    from depthlab.report import figures, write_report

    grid = [(lr, bn) for lr in (0.0001, 0.01, 10.0) for bn in (False, True)]
    runs = pd.DataFrame({"lr": [g[0] for g in grid], "bn": [g[1] for g in grid],
                         "val_acc": [0.5 + 0.01 * k for k in range(6)], "status": "finished"})
    # was: "val_acc (best over the other keys)" over a sweep of these two keys alone
    title = figures.sweep_heatmap(runs, "lr", "bn").axes[0].get_title()
    assert title == "val_acc (one run per cell)", title
    seeds = pd.concat([runs, runs.assign(val_acc=runs["val_acc"] - 0.1)])
    title = figures.sweep_heatmap(seeds, "lr", "bn").axes[0].get_title()
    assert title == "val_acc (best over the other keys)", title
    config = {"data": {"name": "spirals"}, "model": {"sizes": [2, 8, 2]}}
    with Store(tmp_path) as store:
        for k, (lr, bn) in enumerate(grid):
            store.add_run(RunRecord(
                id=f"p{k}", name=f"p{k}", kind="sweep-point", sweep="sw-grid",
                config={**config, "model": {**config["model"], "batchnorm": bn},
                        "train": {"lr": lr}},
                metrics={"val_acc": 0.5 + 0.01 * k, "train_loss": 0.7, "steps": 10}))
        store.add_sweep_points("sw-grid", [f"p{k}" for k in range(6)])
    text = write_report(tmp_path).read_text(encoding="utf-8")
    assert "each cell is that pair&#x27;s run" in text or "each cell is that pair's run" in text
    assert "best run of the pair" not in text
