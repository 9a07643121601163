"""Round 49 (playhunt49): what learners and teachers see, hunted on new ground: names and
values with HTML in them, runs whose every number is NaN, figures with nothing to draw, and
the playground's console during a session. Each fix's test failed before it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

QUANTITIES = ("act_mean", "act_std", "pre_mean", "pre_std", "grad_pre_std", "grad_w_std",
              "weight_std", "update_ratio", "saturated_frac", "dead_frac", "pre_p50")


def _nan_probes(layers: int = 3) -> pd.DataFrame:
    """Every probe of ``layers`` hidden layers at steps 0 and 5, all NaN (a run that was NaN
    from its first step, as an fp16 torch run or a diverged float32 one records)."""
    return pd.DataFrame([{"step": s, "layer": k, "quantity": q, "value": np.nan}
                         for s in (0, 5) for k in range(1, layers + 1) for q in QUANTITIES])


def _titles(fig) -> list[str]:
    """Every title the figure shows: its suptitle and each axes' titles."""
    shown = [fig._suptitle.get_text()] if fig._suptitle is not None else []
    for ax in fig.axes:
        shown += [ax.get_title(loc) for loc in ("left", "center", "right")]
    return [t for t in shown if t.strip()]


def _empty_figures():
    from depthlab import plot
    from depthlab.report import figures

    nan, none = _nan_probes(), pd.DataFrame(columns=["step", "layer", "quantity", "value"])
    nan_loss = pd.DataFrame({"step": np.arange(4), "loss": np.full(4, np.nan)})
    no_hist = pd.DataFrame(columns=["step", "layer", "kind", "bin_left", "bin_right", "count"])
    no_jac = pd.DataFrame(columns=["step", "index", "value"])
    return {
        "training_curves (all NaN)": lambda: figures.training_curves(nan_loss),
        "activation_mean_std (all NaN)": lambda: figures.activation_mean_std(nan),
        "activation_mean_std (none)": lambda: figures.activation_mean_std(none),
        "percentile_bands (none)": lambda: figures.percentile_bands(none),
        "percentile_bands (all NaN)": lambda: figures.percentile_bands(nan, 1),
        "gradient_heatmap (all NaN)": lambda: figures.gradient_heatmap(nan),
        "gradient_heatmap (none)": lambda: figures.gradient_heatmap(none),
        "gradient_profile (none)": lambda: figures.gradient_profile(none),
        "weight_std_profile (all NaN)": lambda: figures.weight_std_profile(nan),
        "weight_std_profile (none)": lambda: figures.weight_std_profile(none),
        "layer_histograms (none)": lambda: figures.layer_histograms(no_hist),
        "saturation_dead (all NaN)": lambda: figures.saturation_dead(nan),
        "saturation_dead (none)": lambda: figures.saturation_dead(none),
        "jacobian_spectrum (none)": lambda: figures.jacobian_spectrum(no_jac),
        "update_ratio (all NaN)": lambda: figures.update_ratio(nan),
        "plot.gradient_per_layer (all NaN)": lambda: plot.gradient_per_layer(nan),
        "plot.activation_per_layer (all NaN)": lambda: plot.activation_per_layer(nan),
        "plot.activation_bands (all NaN)": lambda: plot.activation_bands(nan),
        "plot.activation_histograms (none)": lambda: plot.activation_histograms(no_hist),
        "plot.update_ratio (all NaN)": lambda: plot.update_ratio(nan),
        "plot.weight_std (all NaN)": lambda: plot.weight_std(nan),
        "plot.saturation (all NaN)": lambda: plot.saturation(nan),
    }


@pytest.mark.parametrize("name", list(_empty_figures()))
def test_a_figure_with_nothing_to_draw_still_says_what_it_is_a_figure_of(name):
    """A run whose probes were all NaN (or never recorded) drew bare axes and a grey line
    ("every 'weight_std' probe is NaN or inf: nothing to draw") with no title: its PNG in the
    report's figures/ folder did not say what figure it was. Each now carries the title it
    has with data (the weight std figure: "Weight std per layer: initialization and end")."""
    fig = _empty_figures()[name]()
    assert _titles(fig), f"{name}: a figure with no title"


def _texts_above_axes(fig) -> list[tuple[str, float]]:
    """(text, pixels its top is above the axes' top) of each bar text that sticks out."""
    ax = fig.axes[0]
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    top = ax.get_window_extent(renderer).y1
    return [(t.get_text(), round(t.get_window_extent(renderer).y1 - top, 1))
            for t in ax.texts if t.get_window_extent(renderer).y1 > top + 0.5]


@pytest.mark.parametrize("values", [[0.675, 0.673, 0.681, 0.684, 0.67, 0.668, 0.668, 0.675],
                                    [0.1, 0.5, 0.9, 0.95, 0.99, 0.2, 0.3, 0.99]])
def test_a_three_key_sweeps_bar_values_stay_inside_the_axes_under_the_title(values):
    """A sweep over three keys is drawn as one bar per run, its long names turned under the
    bars, which leaves short axes: the tallest bar's value ("0.684") stuck 3 px out of the
    axes, written over the title "train_loss by run" in the report's PNG. Every value now
    ends inside the axes."""
    import itertools

    from depthlab import plot

    rows = [{"name": f"three:lr={lr},depth={d},activation={a}", "train.lr": lr,
             "model.depth": d, "model.activation": a, "train_loss": v, "status": "finished"}
            for (lr, d, a), v in zip(itertools.product([0.05, 0.2], [2, 4], ["tanh", "relu"]),
                                     values)]
    fig = plot.sweep_metric(pd.DataFrame(rows), ["train.lr", "model.depth", "model.activation"],
                            "train_loss", higher_is_better=False)
    assert len(fig.axes[0].texts) == 8
    assert _texts_above_axes(fig) == []


# -- the playground in a browser ------------------------------------------------------------------
MEASURED = "document.getElementById('grad-summary').dataset.step !== ''"
INJECTION = "<script>window.__pwn=1</script><img src=x id=INJ onerror=\"window.__pwn=2\">\"'&</div>"


@pytest.fixture(scope="module")
def server():
    from depthlab.playground.server import Background

    with Background(memory_limit=256 * 2**20) as bg:
        yield bg


@pytest.fixture()
def page(browser, server):
    from helpers.browser import checked_page

    with checked_page(browser) as pg:
        yield pg


def test_a_links_script_value_is_shown_as_text_and_never_run(page, server):
    """A shared link whose values (and a key) carry ``<script>`` and an ``onerror`` image:
    the refusal names them as text, no element is made of them, nothing runs, no dialog."""
    import urllib.parse

    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    query = urllib.parse.urlencode({"model.activation": INJECTION, "train.lr": INJECTION})
    page.goto(f"{server.url}?{query}")
    page.wait_for_function("document.getElementById('message').textContent.includes('lr')")
    state = page.evaluate("""() => [window.__pwn === undefined, !document.getElementById('INJ'),
        document.getElementById('message').textContent]""")
    assert state[:2] == [True, True], state
    assert "<script>window.__pwn=1</script><img" in state[2]
    assert page.input_value("[name='model.activation']") == INJECTION
    assert dialogs == []


def test_the_theory_line_the_page_draws_is_depthlab_theorys_for_that_setting(page, server):
    """The gradient panel's theory line, read from the page, is
    ``predict_gradients(model, x=the session's probe rows, loss=...).relative_std`` times the
    last layer's value at step 0, layer by layer (5 significant digits), for a setting other
    than the default (elu, lecun_normal, 7 layers of 24, mse)."""
    from depthlab.theory import predict_gradients

    page.goto(f"{server.url}?model.activation=elu&model.init=lecun_normal&model.depth=7"
              "&model.width=24&train.loss=mse")
    page.wait_for_function(MEASURED)
    drawn = page.evaluate("""() => ({rel: S.theory.relative_std,
        line: S.plots['plot-grad'].data[3], top: S.init.grad_std[S.init.grad_std.length - 1]})""")
    (session,) = server.app.state.registry.sessions.values()
    pred = predict_gradients({"sizes": [2] + [24] * 7 + [2], "activation": "elu",
                              "init": "lecun_normal"}, x=session.monitor.x, loss="mse")
    assert len(drawn["rel"]) == 7
    np.testing.assert_allclose(drawn["rel"], pred.relative_std, rtol=1e-4)
    np.testing.assert_allclose(10.0 ** np.array(drawn["line"]),
                               np.array(pred.relative_std) * drawn["top"], rtol=1e-4)


def test_back_and_forward_between_two_links_restore_each_links_settings(page, server):
    """Two links opened one after the other in a tab, a control changed on the first: Back
    shows the first link's setup with that change (the page keeps its URL up to date),
    Forward the second's, and the panels measure the network the controls show."""
    def shown() -> list:
        page.wait_for_function(MEASURED)
        return page.evaluate("""() => [document.querySelector("[name='model.depth']").value,
            document.querySelector("[name='model.activation']").value,
            document.querySelector("[name='train.lr']").value,
            document.getElementById('grad-summary').dataset.step,
            (/, \\w+ (\\d+) /.exec(document.getElementById('grad-summary').textContent)
             || [])[1]]""")

    from depthlab.playground.setup import FIELDS

    lr = next(str(f.default) for f in FIELDS if f.key == "train.lr")  # the second link's
    page.goto(f"{server.url}?model.depth=4&model.activation=gelu")
    page.wait_for_function(MEASURED)
    page.fill("[name='train.lr']", "0.07")
    page.dispatch_event("[name='train.lr']", "change")
    page.wait_for_function("new URLSearchParams(location.search).get('train.lr') === '0.07'")
    page.goto(f"{server.url}?model.depth=7&model.activation=elu")
    assert shown() == ["7", "elu", lr, "0", "7"]
    page.go_back()
    assert shown() == ["4", "gelu", "0.07", "0", "4"]
    page.go_forward()
    assert shown() == ["7", "elu", lr, "0", "7"]
