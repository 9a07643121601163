"""Round 52 (playhunt52): what learners and teachers see in the playground and the reports,
hunted with a real browser (Playwright + Debian's Chromium) and by looking at the figures.
Each fix's test failed before it."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest


def _get(url: str) -> tuple[int, dict]:
    """The status and JSON body of a GET (an HTTP error's too)."""
    try:
        with urllib.request.urlopen(url) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_a_preset_link_naming_two_presets_is_refused_naming_both(server):
    """``/api/preset?name=he&name=glorot`` answered 200 with Glorot's setup (the last name,
    taken silently), where a setting given two values is refused naming both."""
    status, body = _get(server.url + "api/preset?name=he&name=glorot")
    assert status == 400, body
    assert body["ok"] is False
    assert "'he', 'glorot'" in body["message"] and "expected one" in body["message"], body
    # the same name twice is one preset
    status, body = _get(server.url + "api/preset?name=he&name=he")
    assert status == 200 and body["ok"], body
    assert body["query"]["model.activation"] == "relu"


# -- the playground in a browser ------------------------------------------------------------------
MEASURED = "document.getElementById('grad-summary').dataset.step !== ''"


def _contrast_on_white(rgb: str) -> float:
    """WCAG's contrast ratio of the colour ``rgb(r,g,b)`` on white: 1.05 / (L + 0.05), L the
    relative luminance (sRGB channels linearized, weighted 0.2126, 0.7152, 0.0722)."""
    r, g, b = (int(v) / 255 for v in rgb[rgb.index("(") + 1:rgb.index(")")].split(","))

    def lin(c: float) -> float:
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    lum = 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b)
    return 1.05 / (lum + 0.05)


@pytest.fixture()
def page(browser, server):
    from helpers.browser import checked_page

    with checked_page(browser) as pg:
        yield pg


def test_the_last_layers_line_is_not_pale_yellow_on_the_white_plots(page, server, tmp_path):
    """The histogram and activations-over-training panels coloured layers along all of
    viridis: the last layer (the one nearest the output, and its dotted ±std lines) was pale
    yellow rgb(253,231,37), contrast 1.26:1 on the white plot, where the report's layer figures
    stop at viridis 0.82 (never pale yellow). Each layer line now is at least 1.8:1."""
    from helpers.browser import screenshot_dir

    page.goto(server.url)
    page.wait_for_function(MEASURED, timeout=180_000)
    shots = screenshot_dir(tmp_path / "shots")
    page.locator("#panel-hist").screenshot(path=str(shots / "playhunt52-hist-colours.png"))
    strokes = page.evaluate("""() => ['plot-hist', 'plot-evo'].flatMap(id =>
        S.plots[id].series.slice(1).map(s => [id, s.label, s._stroke || s.stroke]))""")
    assert len(strokes) > 6, strokes
    pale = [(plot, label, c) for plot, label, c in strokes if _contrast_on_white(c) < 1.8]
    assert pale == [], pale
    # still one colour per layer shown, and the order kept: darker towards the output
    means = [c for plot, label, c in strokes if plot == "plot-hist"]
    assert len(set(means)) == len(means), means
    contrasts = [_contrast_on_white(c) for c in means]
    assert contrasts == sorted(contrasts, reverse=True), contrasts


@pytest.mark.parametrize(("activation", "labels"), [
    ("relu", ["saturated: none for relu", "inactive", "dead"]),
    ("tanh", ["saturated", "inactive: none for tanh", "dead"]),
    ("identity", ["saturated: none for identity", "inactive: none for identity", "dead"]),
    ("relu6", ["saturated", "inactive", "dead"]),
])
def test_the_saturation_legend_says_which_fractions_the_activation_has_none_of(
        page, server, activation, labels, tmp_path):
    """A ReLU net's saturation panel listed "saturated" in its legend beside no line (the
    fraction is not defined for an unbounded activation: the server sends none), a tanh net's
    "inactive" the same, as a drawing fault would look: the entry says there is none, as the
    loss panel's "held-out acc: none for mse" does (the panel's title says which activations
    have which fraction)."""
    from helpers.browser import screenshot_dir

    page.goto(server.url + f"?model.activation={activation}&model.depth=3&model.width=8")
    page.wait_for_function(MEASURED, timeout=180_000)
    shown = page.evaluate("""() => [...document.querySelectorAll('#plot-sat .u-legend .u-series')]
        .map(r => r.textContent.trim())""")
    assert shown[-3:] == labels
    shown = shown[-3:]
    drawn = page.evaluate("S.plots['plot-sat'].data.slice(1).map(a => a.some(v => v !== null))")
    for label, has_line in zip(shown, drawn):
        assert ("none for" not in label) == has_line, (label, drawn)
    shots = screenshot_dir(tmp_path / "shots")
    page.locator("#panel-sat").screenshot(path=str(shots / f"playhunt52-sat-{activation}.png"))


# -- report figures -------------------------------------------------------------------------------
def _mean_std_table(steps, names: list[str] | None, n_layers: int, std: float):
    import pandas as pd

    rows = []
    for step in steps:
        for layer in range(1, n_layers + 1):
            extra = {"module": names[layer - 1]} if names else {}
            rows += [{"step": step, "layer": layer, "quantity": "act_mean", "value": 0.1 * layer,
                      **extra},
                     {"step": step, "layer": layer, "quantity": "act_std", "value": std,
                      **extra}]
    return pd.DataFrame(rows)


LONG_NAMES = ["embed"] + [f"encoder.layers.{i}.self_attn.out_proj" for i in range(11)] + ["head"]


@pytest.mark.parametrize(("names", "n_layers"), [(None, 3), (LONG_NAMES, 13)])
def test_the_mean_std_legend_covers_no_error_bar_and_fits_the_figure(names, n_layers, tmp_path):
    """``figures.activation_mean_std`` (Glorot & Bengio's Fig. 2: per layer a mean line and
    ±std error bars at every probed step) placed its legend by matplotlib's "best", which does
    not see error bars: over 10 steps of 3 layers whose bars span the axes it sat across the
    last 6 bars. Its legend now sits outside the axes, the figure widened to hold it (long
    module names included), and a two-line title is not cut at the top."""
    import numpy as np

    from depthlab.report.figures import activation_mean_std, figure_png

    fig = activation_mean_std(_mean_std_table(range(0, 100, 10), names, n_layers, 0.6))
    ax = fig.axes[0]
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    box = ax.get_legend().get_window_extent(renderer)
    bars = [c for c in ax.collections if len(c.get_segments())]
    assert bars, "no error bars drawn"
    for c in bars:
        for seg in c.get_segments():
            (x0, y0), (x1, y1) = ax.transData.transform(np.asarray(seg, float))
            crosses = box.x0 <= x0 <= box.x1 and min(y0, y1) <= box.y1 and max(y0, y1) >= box.y0
            assert not crosses, (box, seg)
    page = fig.bbox
    for text in ax.get_legend().get_texts():
        t = text.get_window_extent(renderer)
        assert t.x1 <= page.x1 and t.x0 >= page.x0, (text.get_text(), t, page)
    title = ax.title.get_window_extent(renderer)
    assert title.y1 <= page.y1, (ax.title.get_text(), title, page)
    (tmp_path / "mean_std.png").write_bytes(figure_png(fig))


def test_a_heatmap_title_of_several_blank_notes_is_not_cut_at_the_top(tmp_path):
    """A torch run's gradient heatmap with a layer that records no gradient (an attention
    block), a zero and a non-finite value was titled in four lines ("Back-propagated gradient
    std per layer", "blank: 1 layer with no grad_pre_std recorded", "blank: not finite ...",
    "blank: zero at step 8") in a fixed 0.38 in top margin: its first two lines were above the
    figure's edge, cut off. The figure now grows at the top, the axes keeping their size."""
    import numpy as np
    import pandas as pd

    from depthlab.report.figures import figure_png, gradient_heatmap

    names = ["embed", "encoder.layers.0.self_attn", "encoder.layers.0.self_attn.out_proj",
             "encoder.layers.0.linear1", "encoder.layers.0.linear2", "head"]
    rows = []
    for step in range(0, 10, 2):
        for layer, name in enumerate(names, 1):
            rows.append({"step": step, "layer": layer, "module": name, "quantity": "weight_std",
                         "value": 0.1})
            if layer == 2:  # the attention block: no output of its own, no gradient
                continue
            value = {(3, 8): 0.0, (4, 8): np.inf}.get((layer, step), 1e-3 * layer)
            rows.append({"step": step, "layer": layer, "module": name,
                         "quantity": "grad_pre_std", "value": value})
    fig = gradient_heatmap(pd.DataFrame(rows))
    ax = fig.axes[0]
    assert ax.get_title().count("\n") == 3, ax.get_title()
    fig.canvas.draw()
    title = ax.title.get_window_extent(fig.canvas.get_renderer())
    assert title.y1 <= fig.bbox.y1, (title, fig.bbox)
    assert ax.get_position().height * fig.get_figheight() > 2.5  # the rows kept their height
    (tmp_path / "heatmap.png").write_bytes(figure_png(fig))


@pytest.mark.parametrize(("query", "ends"), [("", (-1, 1)),
                                             ("?model.activation=step&model.init=normal", (0, 1))])
def test_the_histograms_x_axis_spans_the_bins_and_labels_the_activations_bounds(
        page, server, query, ends, tmp_path):
    """The histogram panel's x axis spanned its bins' centres (-0.983 to 0.983 for tanh), so
    the saturation spikes at -1 and 1 stood at the axis' ends with no label nearer than 0.5,
    and a step function's 0 and 1 were not labelled at all: the axis spans the bins' edges."""
    from helpers.browser import screenshot_dir

    page.goto(server.url + query)
    page.wait_for_function(MEASURED, timeout=180_000)
    scale = page.evaluate("[S.plots['plot-hist'].scales.x.min, S.plots['plot-hist'].scales.x.max]")
    assert scale == pytest.approx(list(ends)), scale
    labels = page.evaluate("S.plots['plot-hist'].axes[0]._values")
    assert labels[0] == str(ends[0]) and labels[-1] == str(ends[1]), labels
    shots = screenshot_dir(tmp_path / "shots")
    page.locator("#panel-hist").screenshot(path=str(shots / "playhunt52-hist-ends.png"))


def test_the_divergence_banner_says_not_finite_where_the_trainer_said_nan(page, server):
    """A diverged run's banner read "training diverged at step 2 (epoch 1): loss = nan; ..."
    (the trainer's text of Python's NaN) and then "values that were not finite read 'not
    finite'": the page's word for it, with NaN or inf named."""
    import re

    page.goto(server.url + "?model.activation=relu&model.init=normal&train.lr=10"
              "&model.depth=20")
    page.wait_for_function(MEASURED, timeout=180_000)
    page.click("#play")
    page.wait_for_function("document.body.dataset.state === 'diverged' && "
                           "!document.getElementById('diverged').hidden", timeout=60_000)
    text = page.locator("#diverged").text_content()
    assert "the loss was not finite (NaN)" in text, text
    assert not re.search(r"\bnan\b", text), text
    # an overflow to inf is named so
    page.evaluate("""() => onDiverged({type: "diverged", step: 9, epoch: 1, layer: null,
        loss: null, losses: [], nonfinite_parameters: [],
        message: "training diverged at step 9 (epoch 1): loss = inf; every layer overflowed."})""")
    page.wait_for_function("document.getElementById('diverged').dataset.step === '9'")
    text = page.locator("#diverged").text_content()
    assert "training diverged at step 9 (epoch 1): the loss was not finite (+inf); every" in text


@pytest.mark.parametrize(("query", "label"), [("?model.activation=step&model.init=normal",
                                               "theory: none"), ("", "theory")])
def test_the_gradient_legend_says_there_is_no_theory_line_where_there_is_none(page, server,
                                                                             query, label):
    """A step-function net (the theory has no line: E[f'(s)^2] = 0) listed "theory" in the
    gradient panel's legend, with its dotted square, beside no line: the entry says none, as
    the saturation panel's, and the note below the plot says why."""
    page.goto(server.url + query)
    page.wait_for_function(MEASURED, timeout=180_000)
    entries = page.evaluate("""() => [...document.querySelectorAll(
        '#panel-grad .u-legend .u-series')].map(r => r.textContent.trim())""")
    assert entries[-1] == label, entries
    drawn = page.evaluate("S.plots['plot-grad'].data[3].some(v => v !== null)")
    assert drawn == (label == "theory")
    if not drawn:
        assert page.locator("#theory-note").text_content().startswith("no theory line: ")


def test_the_reports_divergence_alert_says_not_finite_where_the_trainer_said_nan(tmp_path):
    """A diverged run's alert in the report read "Training diverged. training diverged at step
    4 (epoch 1): loss = nan; ..." above "loss: not finite (NaN/inf)": the message in the
    report's words, as the playground's banner says it."""
    import re

    import pandas as pd

    from depthlab.experiments.store import RunRecord, Store
    from depthlab.report import write_report

    with Store(tmp_path) as store:
        store.add_run(RunRecord(
            id="div", name="div", status="diverged", config={"model": {}},
            metrics={"steps": 3},
            divergence={"step": 4, "epoch": 1, "loss": float("nan"), "layer": "dense4",
                        "nonfinite_parameters": [], "max_grad": None,
                        "message": "training diverged at step 4 (epoch 1): loss = nan; first "
                                   "non-finite values came out of layer 'dense4'."},
            steps=pd.DataFrame({"step": [1, 2, 3], "loss": [0.9, 440.0, 2.6e14]})))
    text = write_report(tmp_path).read_text(encoding="utf-8")
    alert = text[text.index("<b>Training diverged.</b>"):]
    alert = alert[:alert.index("</div></div>")]
    assert "training diverged at step 4 (epoch 1): the loss was not finite (NaN); first" \
        in alert, alert
    assert not re.search(r"\bnan\b", alert), alert
