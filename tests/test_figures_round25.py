"""Round 25: the figures a learner or teacher looks at (helper figures25). Each test failed
before its fix; they check the figures' data (ticks, lines, texts), not pixels."""

from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
import pytest

matplotlib.use("Agg")


def _probe_rows(layers: int, steps=(0, 10, 20), quantity: str = "grad_pre_std"):
    return pd.DataFrame([{"step": s, "layer": la, "quantity": quantity,
                          "value": 10.0 ** (la - layers)}
                         for s in steps for la in range(1, layers + 1)])


def test_the_gradient_heatmap_numbers_its_rows_by_whole_layers():
    # a 20-layer run's heatmap read "layer 2.5, 5.0, 7.5, ..." on its y axis (matplotlib's
    # automatic ticks; layers are whole numbers): the x axes had an integer locator, this
    # one did not
    from depthlab import plot

    fig = plot.gradient_heatmap(_probe_rows(20))
    ax = fig.axes[0]
    fig.canvas.draw()
    lo, hi = sorted(ax.get_ylim())
    ticks = [t for t in ax.get_yticks() if lo <= t <= hi]
    assert len(ticks) >= 3
    assert all(float(t).is_integer() for t in ticks), ticks
    labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    assert labels and all("." not in s for s in labels), labels


def test_a_diverged_runs_gradient_profile_says_its_later_steps_were_not_finite():
    # a run that diverged by its second probe (every layer's gradient NaN there) drew one
    # panel, "at initialization", with not a word about the step recorded after it: the
    # reader could not tell the run had been probed later at all
    from depthlab import plot

    table = _probe_rows(4, steps=(0, 3))
    table.loc[table["step"] == 3, "value"] = np.nan
    fig = plot.gradient_per_layer({"div": table})
    titles = [ax.get_title() for ax in fig.axes]
    assert len(fig.axes) == 2, titles
    assert "step 0, the last finite" in titles[1], titles
    # the drawn end line is step 0's, as the stored table holds it
    line = fig.axes[1].lines[0]
    np.testing.assert_allclose(line.get_ydata(), table[table["step"] == 0]["value"])


def test_gradient_ratio_of_a_torch_table_leaves_its_output_layer_out_as_the_card_does():
    # plot.gradient_ratio(watch) took the first layer against the head (0.066), the Watch's
    # card, the report's table and the doctor the first against the last hidden layer (0.45)
    torch = pytest.importorskip("torch")
    import depthlab.torch as dlt
    from depthlab import plot
    from depthlab.report.notebook import _watch_ratio_text

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 8),
                                torch.nn.Tanh(), torch.nn.Linear(8, 8), torch.nn.Tanh(),
                                torch.nn.Linear(8, 3)).double()
    x, y = torch.randn(32, 6, dtype=torch.float64), torch.randint(0, 3, (32,))
    watch = dlt.Watch(model, every=1, theory=False)
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    watch.step(loss)
    frame = watch.frame()
    grads = frame[frame["quantity"] == "grad_pre_std"].set_index("layer")["value"]
    assert sorted(grads.index) == [1, 2, 3, 4]  # layer 4: the output layer
    hidden = grads.loc[1] / grads.loc[3]
    assert abs(grads.loc[1] / grads.loc[4] - hidden) > 0.05 * hidden  # the two differ here
    assert plot.gradient_ratio(frame) == pytest.approx(hidden, rel=1e-12)
    assert plot.gradient_ratio(watch) == pytest.approx(hidden, rel=1e-12)
    assert f"{hidden:.4g}" in _watch_ratio_text(frame)  # the card says the same number
    # a NumPy table (no module column) keeps its last layer: it is a hidden one
    numpy_table = frame[frame["layer"] >= 1].drop(columns="module")
    assert plot.gradient_ratio(numpy_table) == pytest.approx(
        grads.loc[1] / grads.loc[4], rel=1e-12)


def test_a_loss_reaching_zero_or_below_is_drawn_not_dropped_by_a_log_axis():
    # the loss panel went to a log axis when its positive values spanned > 30x: the steps at
    # exactly 0 (a fit to every example) or below 0 (a negative log-likelihood) vanished from
    # the line without a word (a loss of 100 -> 0.01 -> -5 stopped at step 150 of 200)
    from depthlab import plot

    loss = np.r_[np.geomspace(100, 0.01, 150), -np.linspace(0.1, 5, 50)]
    for y in (loss, np.r_[np.geomspace(1.0, 0.01, 38), 0.0, 0.0]):
        steps = pd.DataFrame({"step": np.arange(1, len(y) + 1), "loss": y})
        ax = plot.training_curves(steps).axes[0]
        assert ax.get_yscale() == "symlog", ax.get_yscale()
        raw = ax.lines[0]
        np.testing.assert_array_equal(raw.get_ydata(), y)  # every step drawn, as recorded
        lo, hi = ax.get_ylim()
        assert lo <= y.min() and hi >= y.max()
        assert "symlog" in ax.get_ylabel()
    # all positive: still the log axis; a small range: linear
    ax = plot.training_curves(pd.DataFrame({"step": [1, 2, 3, 4, 5, 6],
                                            "loss": [100, 10, 1, 0.1, 0.01, 0.001]})).axes[0]
    assert ax.get_yscale() == "log" and ax.get_ylabel() == "loss"
    ax = plot.training_curves(pd.DataFrame({"step": [1, 2, 3], "loss": [1.0, 0.0, -1.0]})).axes[0]
    assert ax.get_yscale() == "linear"


def test_the_depth_ladders_bn_claim_quotes_no_measurement_in_its_paper_column():
    # the paper column said "(this project: trained to depth 20, not 50)", written in by hand
    # from one earlier run, beside the measured column's 10 of this run (quick, this machine)
    from depthlab.reproduce import depth_ladder

    deep = {k: 2 for k in depth_ladder.NAIVE} | {k: 20 for k in depth_ladder.GOOD}
    for bn_depth in (10, 20, 50):
        deep |= {depth_ladder.BN: bn_depth, depth_ladder.RES: 100}
        claims = {c.claim: c for c in depth_ladder.claims(deep, [3, 10, 20, 50, 100])}
        bn = claims["relu + he_normal + BN trains at depth ≥ 50"]
        assert bn.measured == str(bn_depth)
        assert "Yang et al. 2019" in bn.paper
        # the paper cell states no number of this project's (the measured cell holds it)
        assert not any(ch.isdigit() for ch in bn.paper.replace("2019", "")), bn.paper


def test_a_heatmap_of_another_quantity_is_titled_by_that_quantity():
    # plot.gradient_heatmap(table, "act_std") drew the activations' std under the title
    # "Back-propagated gradient std per layer" and a colour bar "std of dL/ds"
    from depthlab import plot

    for quantity, word in (("act_std", "activations"), ("weight_grad_std", "dL/dW"),
                           ("my_probe", "my_probe")):
        fig = plot.gradient_heatmap(_probe_rows(5, quantity=quantity), quantity)
        ax, bar = fig.axes
        assert "Back-propagated" not in ax.get_title() and "dL/ds" not in bar.get_ylabel()
        assert word in bar.get_ylabel(), bar.get_ylabel()
        np.testing.assert_allclose(sorted(ax.collections[0].get_array().compressed()),
                                   sorted(_probe_rows(5)["value"]))
    fig = plot.gradient_heatmap(_probe_rows(5))
    assert fig.axes[0].get_title() == "Back-propagated gradient std per layer"
    assert fig.axes[1].get_ylabel() == "std of dL/ds (log scale)"
