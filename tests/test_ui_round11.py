"""Round 11: what a learner or a teacher sees in reports of unusual stores and in the
playground (helper "ui11").

* a 300-layer run's histogram figures wrote their heading ("Histograms of the back-propagated
  gradient dL/ds (layers 1, 76, 151, 225, 300 of 300: first, last and evenly spaced); each
  panel on its own bins") wider than the figure: "Histograms" and "bins" were cut off at its
  edges (a one-step run's 4.5 in figure cut even a 3-layer heading); now wrapped;
* the per-layer gradient figure of a 300-layer ReLU run whose gradients are exactly 0 below
  layer 299 at the end drew, under "at the end of training", the two points of layers 299 and
  300 alone, on an axis of 299-300, without a word on the 298 others (a log axis cannot show
  0); now the panel keeps every recorded layer on its axis and says which are zero;
* the playground's loss panel of a diverging setup (lr 10, 6 ReLU layers) stopped at the last
  measurement (step 1, train loss 0.94) where the loss went on to 440 and 2.6e14 at steps 2
  and 3 before the NaN of step 4: the session dropped the losses it had not yet sent; now the
  "diverged" message carries them, the panel draws them and its note lists them;
* a sweep of one point said "1 runs";
* a torch run's pre-activation percentile figure drew the output Linear's logits, captioned as
  "one layer's input to its nonlinearity"; now the last layer that feeds one;
* a torch doctor's run was captioned "this run recorded no accuracy" under its "val acc
  0.1222" (its accuracy is in its final metrics only);
* the update-ratio figure of a 12-sigmoid-layer model listed layers [1], [3], [5] in its legend
  with no line (their updates were below float32 resolution: ratio exactly 0), and a third
  title line was cut off at the top; now named, and the margin grows;
* a divergence's NaN loss (stored as null) read "loss none" under "loss = nan".

Browser tests use Debian's Chromium (they fail, not skip, without it); screenshots go to a
temporary folder (``DEPTHLAB_SCREENSHOTS=DIR`` keeps them in DIR).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from helpers.browser import checked_page, screenshot_dir

from depthlab import plot

MEASURED = "document.getElementById('grad-summary').dataset.step !== ''"


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    return screenshot_dir(tmp_path_factory.mktemp("round11_screenshots"))


@pytest.fixture()
def page(browser, server):
    with checked_page(browser) as pg:
        yield pg


def _inside(fig, artist) -> bool:
    fig.canvas.draw()
    box = artist.get_window_extent(fig.canvas.get_renderer())
    return (box.x0 >= fig.bbox.x0 - 0.5 and box.x1 <= fig.bbox.x1 + 0.5
            and box.y0 >= fig.bbox.y0 - 0.5 and box.y1 <= fig.bbox.y1 + 0.5)


def _hist_table(n_layers: int, steps=(0, 20)) -> pd.DataFrame:
    edges = np.linspace(0, 1, 11)
    rows = [(s, layer, kind, a, b, 5)
            for s in steps for layer in range(1, n_layers + 1) for kind in ("act", "grad")
            for a, b in zip(edges[:-1], edges[1:])]
    return pd.DataFrame(rows, columns=["step", "layer", "kind", "bin_left", "bin_right", "count"])


@pytest.mark.parametrize("n_layers, steps, kind", [
    (300, (0, 20), "grad"), (300, (0, 20), "act"), (3, (0,), "act")])
def test_a_histogram_figures_heading_fits_its_figure(n_layers, steps, kind):
    fig = plot.activation_histograms(_hist_table(n_layers, steps), kind=kind)
    heading = fig._suptitle
    # was: 'Histograms of the back-propagated gradient dL/ds (layers 1, 76, ...' 10.9 in wide
    # in an 8.4 in figure, both ends cut off
    assert _inside(fig, heading), heading.get_text()
    assert "each panel on its own bins" in heading.get_text().replace("\n", " ")


def _dead_below(n_layers: int = 300) -> pd.DataFrame:
    """grad_pre_std of a deep ReLU run: finite at step 0, exactly 0 below the top 2 layers
    from step 10 (a layer whose units all died passes no gradient down)."""
    rows = []
    for step in (0, 10, 20):
        for layer in range(1, n_layers + 1):
            v = 1e-3 * 0.9 ** (n_layers - layer)
            if step and layer < n_layers - 1:
                v = 0.0
            rows.append((step, layer, "grad_pre_std", v))
    return pd.DataFrame(rows, columns=["step", "layer", "quantity", "value"])


def test_layers_whose_gradient_is_zero_at_the_end_are_said_and_keep_their_place():
    fig = plot.gradient_per_layer(_dead_below(), theory=False)
    init, end = fig.axes[:2]
    # was: the end panel's axis 299-300 and its title "at the end of training" alone
    assert end.get_xlim()[0] <= 1 and end.get_xlim()[1] >= 300, end.get_xlim()
    assert "zero" in end.get_title() and "1-298" in end.get_title(), end.get_title()
    assert "zero" not in init.get_title()
    assert _inside(fig, end.title)


def test_a_diverging_runs_loss_panel_draws_the_losses_up_to_the_nan(page, server, shots):
    page.goto(server.url + "?train.lr=10&model.depth=6&model.activation=relu"
              "&model.init=he_normal")
    page.wait_for_function(MEASURED, timeout=90_000)
    page.click("#play")
    page.wait_for_selector("#diverged:not([hidden])", timeout=30_000)
    page.screenshot(path=str(shots / "round11_diverged_loss.png"))
    nan_step = int(page.get_attribute("#diverged", "data-step"))
    steps, train = page.evaluate("[S.plots['plot-loss'].data[0], S.plots['plot-loss'].data[1]]")
    # was: the panel ended at the last measurement, step 1 (loss 0.94), of a NaN at step 4
    assert steps[-1] == nan_step - 1, (steps, nan_step)
    assert train[-1] is not None and train[-1] > 10 * train[1], train
    note = page.text_content("#loss-note")
    assert f"step {nan_step}: not finite" in note, note


def _one_point_sweep(folder):
    from depthlab.experiments.store import RunRecord, Store

    config = {"data": {"name": "spirals"}, "model": {"sizes": [2, 16, 16, 2]},
              "train": {"lr": 0.05}}
    with Store(folder) as store:
        store.add_run(RunRecord(id="p0", name="one-point", kind="sweep-point", sweep="sw-one",
                                config=config, metrics={"val_acc": 0.575, "steps": 30},
                                steps=pd.DataFrame({"step": [1, 2], "loss": [0.7, 0.69]})))
        store.add_sweep_points("sw-one", ["p0"])


def test_a_sweep_of_one_point_counts_one_run(tmp_path):
    from depthlab.report import write_report

    _one_point_sweep(tmp_path)
    text = write_report(tmp_path).read_text(encoding="utf-8")
    # was: "1 runs (1 finished)."
    assert "1 runs" not in text
    assert "1 run (1 finished)" in text


def test_the_percentile_figure_of_a_torch_run_draws_a_layer_that_feeds_a_nonlinearity():
    from depthlab.report import figures

    rows = []
    for step in (0, 10, 20):
        for layer, module in ((1, "1"), (2, "3"), (3, "5")):
            quantities = ["pre_p15", "pre_p50", "pre_p85"]
            if layer < 3:  # layer 3 is the output Linear: logits, no activation after it
                quantities += ["act_p50", "act_std"]
            rows += [(step, layer, module, q, 0.1 * layer) for q in quantities]
    probes = pd.DataFrame(rows, columns=["step", "layer", "module", "quantity", "value"])
    fig = figures.percentile_bands(probes)
    # was: "Percentiles of [5]'s pre-activation over training" (the logits)
    assert fig.axes[0].get_title() == "Percentiles of [3]'s pre-activation over training"
    assert "[5]" in figures.percentile_bands(probes, 3).axes[0].get_title()  # when asked


def test_a_run_with_a_final_accuracy_only_is_not_said_to_have_recorded_none(tmp_path):
    from depthlab.experiments.store import RunRecord, Store
    from depthlab.report import write_report

    rows = [(s, layer, q, 0.5) for s in (0, 10) for layer in (1, 2)
            for q in ("grad_pre_std", "act_mean", "act_std")]
    with Store(tmp_path) as store:  # a torch doctor's run: accuracy in its final metrics
        store.add_run(RunRecord(
            id="doc", name="doc", kind="doctor", config={"model": {}},
            metrics={"steps": 10, "train_acc": 0.097, "val_acc": 0.1222},
            steps=pd.DataFrame({"step": range(1, 11), "loss": np.linspace(2.4, 2.3, 10)}),
            probes=pd.DataFrame(rows, columns=["step", "layer", "quantity", "value"])))
    text = write_report(tmp_path).read_text(encoding="utf-8")
    assert "val acc 0.1222" in text
    # was: "this run recorded no accuracy, so none is drawn", under "val acc 0.1222"
    assert "recorded no accuracy" not in text
    assert "at the end only" in text


def test_layers_whose_weights_did_not_change_are_named_in_the_update_ratio_figure():
    from depthlab.report import figures

    # a 12-sigmoid-layer torch doctor run: the first layers' updates (lr 0.1 x gradients of
    # 1e-13) are below float32's resolution of their weights, so W_n == W_(n-1) exactly
    rows = [(s, layer, "update_ratio", 0.0 if layer <= 3 else 10.0 ** (layer - 14))
            for s in (20, 40, 60) for layer in range(1, 14)]
    probes = pd.DataFrame(rows, columns=["step", "layer", "quantity", "value"])
    fig = figures.update_ratio(probes)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    title = ax.get_title()
    # was: "layer 1" in the legend with no line and no word on why; the title names the
    # layers whose weights did not change, and (round 41) the legend names only drawn lines
    assert "layer 1" not in labels and labels, labels
    assert "zero" in title and "layers 1-3" in title, title
    assert _inside(fig, ax.title)


def test_a_divergences_nan_loss_is_not_called_none(tmp_path):
    from depthlab.experiments.store import RunRecord, Store
    from depthlab.report import write_report

    with Store(tmp_path) as store:  # the store keeps the divergence's NaN loss as null
        store.add_run(RunRecord(
            id="div", name="div", status="diverged", config={"model": {}},
            metrics={"steps": 3},
            divergence={"step": 4, "epoch": 1, "loss": float("nan"), "layer": "dense4",
                        "nonfinite_parameters": [], "max_grad": None,
                        "message": "training diverged at step 4 (epoch 1): loss = nan"},
            steps=pd.DataFrame({"step": [1, 2, 3], "loss": [0.9, 440.0, 2.6e14]})))
    text = write_report(tmp_path).read_text(encoding="utf-8")
    # was: "loss none" and "max_grad none" under "loss = nan"
    assert "<span>loss</span><code>none</code>" not in text
    assert "<span>loss</span><code>not finite (NaN/inf)</code>" in text
    assert "<span>max_grad</span>" not in text


def test_an_overlay_says_which_run_has_the_zero_gradients():
    healthy = _dead_below().assign(value=lambda t: t["value"].where(t["value"] > 0, 1e-4))
    fig = plot.gradient_per_layer({"dead": _dead_below(), "healthy": healthy}, theory=False)
    end = fig.axes[1].get_title()
    assert "dead: layers 1-298: zero" in end, end  # not the healthy run's layers
    assert _inside(fig, fig.axes[1].title)
