"""Round 37 (reporthunt37): what a person reads in the report's figures and the playground."""

from __future__ import annotations

import pandas as pd


def _grad_table(first: list[float], last: list[float]) -> pd.DataFrame:
    rows = [{"step": step, "layer": layer, "quantity": "grad_pre_std", "value": v}
            for step, vals in ((0, first), (3, last)) for layer, v in enumerate(vals, 1)]
    return pd.DataFrame(rows)


def test_a_panel_naming_some_runs_keeps_what_tells_them_from_the_others():
    """A sweep over lr x activation whose two lr=100 runs lost their gradient: the panel's
    title read "…activation=tanh, …activation=relu: layers 1-2: zero", the "lr=100," the two
    share dropped as if every run shared it, so the reader took the lr=0.05 runs (same
    labels after the cut) for the broken ones; likewise "…activation=tanh: same values as
    …activation=relu (under it)" of the two lr=0.05 runs. A name is cut only of the start
    that every run of the figure shares (the legend's cut)."""
    from depthlab import plot
    from depthlab.report.figures import cut_labels

    runs = {"lr=100,activation=tanh": _grad_table([.01, .02, .03], [0, 0, .4]),
            "lr=0.05,activation=tanh": _grad_table([.01, .02, .03], [.01, .02, .03]),
            "lr=0.05,activation=relu": _grad_table([.02, .02, .03], [.01, .02, .03]),
            "lr=100,activation=relu": _grad_table([.02, .02, .03], [0, 0, 5])}
    fig = plot.gradient_per_layer(runs)
    end = fig.axes[1].get_title()
    assert "100,activation=tanh" in end and "100,activation=relu" in end, end
    hidden = end[end.index("zero"):]  # the lr=0.05 runs: one under the other
    assert hidden.count("0.05") == 2 and "…activation" not in hidden, end
    # the cut alone: the shared start of the subset is kept when another label lacks it
    assert cut_labels(["a=1,b=2,c=3", "a=1,b=2,c=4"], 6,
                      among=["a=2,b=2,c=3"]) != ["…c=3", "…c=4"]
    assert cut_labels(["sweep:x=1", "sweep:x=2"], 5) == ["…x=1", "…x=2"]  # without among
    assert cut_labels(["sweep:x=1"], 5, among=["sweep:x=1", "sweep:x=2"]) == ["…x=1"]


def test_a_run_that_diverged_in_its_last_update_says_so_on_its_training_figure():
    """A NumPy run whose last step's loss was finite (9252, computed before the update) and
    whose update made the network's loss NaN (the epoch's train loss, where the trainer finds
    the divergence, at that same step: spirals, 6 ReLU layers, N(0, 1), lr 50): the training
    figure was titled "Training loss" alone, one finite point and no word of the divergence
    the page's text reports, because the report took the divergence's step among the drawn
    ones for a non-finite loss the figure names itself."""
    import numpy as np

    from depthlab.report import build

    class _Store:
        def run(self, rid):
            return {"id": rid, "divergence": {"step": 2, "epoch": 2, "loss": None,
                                              "layer": "dense5"}}

    steps = pd.DataFrame({"step": [1, 2], "loss": [0.7, 9252.0]})
    title = build._divergence_title(_Store(), "r", steps)
    assert title == "diverged after the update of step 2 (loss not finite): not drawn", title
    # a step whose own loss was not finite is named by the figure; a step not drawn, here
    assert build._divergence_title(_Store(), "r", steps.assign(loss=[0.7, np.nan])) == ""
    assert build._divergence_title(_Store(), "r", steps.iloc[:1]) == \
        "diverged at step 2 (loss not finite): not drawn"


def test_a_long_runs_epoch_lines_are_lines_not_bands_of_dots():
    """10,000 epochs (a small net trained long): every epoch's loss and accuracy was a 4 pt
    dot, 0.03 in apart, and the accuracy panel showed bands 0.2 high instead of curves; a
    run of few epochs keeps its dots."""
    import numpy as np

    from depthlab.report.figures import training_curves

    def figure(n: int):
        rng = np.random.default_rng(0)
        steps = pd.DataFrame({"step": np.arange(1, n + 1), "loss": np.linspace(1, .1, n)})
        epochs = pd.DataFrame({"epoch": np.arange(1, n + 1), "step": np.arange(1, n + 1),
                               "train_loss": np.linspace(1, .1, n),
                               "val_loss": np.linspace(1, .2, n),
                               "train_acc": rng.uniform(.5, .6, n),
                               "val_acc": rng.uniform(.5, .6, n)})
        return training_curves(steps, epochs)

    long = [ln for ax in figure(2000).axes for ln in ax.get_lines() if len(ln.get_xdata()) > 80]
    assert long and all(ln.get_marker() in ("None", "", None) for ln in long), \
        [(ln.get_label(), ln.get_marker()) for ln in long]
    short = [ln for ax in figure(12).axes for ln in ax.get_lines() if "epoch" in ln.get_label()
             or ln.get_label() in ("train", "validation")]
    # (each split has its own marker since round 50, for grayscale prints: circles, squares)
    assert short and all(ln.get_marker() not in ("None", "", None) for ln in short), \
        [(ln.get_label(), ln.get_marker()) for ln in short]


def test_a_per_layer_line_breaks_at_layers_a_log_axis_cannot_show():
    """A run at lr 100 whose ReLU layers 2-3 went dead (activation std 0) between 5e6 in
    layer 1 and 5 in layer 4: the overlay drew one straight line from layer 1 to layer 4, as
    if about 5e4 and 5e2 had been measured in layers 2 and 3; the title said they were zero.
    The line breaks there; a layer with no row at that step is no break."""
    import numpy as np

    from depthlab import plot

    runs = {"lr=100": _grad_table([.01, .02, .03, .04], [5e6, 0, np.nan, 5]),
            "lr=0.05": _grad_table([.01, .02, .03, .04], [.01, .02, .03, .04])}
    fig = plot.gradient_per_layer(runs)
    color = [ln for ln in fig.axes[1].get_lines()
             if ln.get_label().startswith("lr=100")][0].get_color()
    pieces = [list(np.asarray(ln.get_xdata(), float)) for ln in fig.axes[1].get_lines()
              if ln.get_color() == color and ln.get_linestyle() != "None"]
    assert sorted(pieces) == [[1.0], [4.0]], pieces  # two stretches: nothing across 2-3
    # layer 3 not recorded at the end (no row): drawn across, as before
    table = _grad_table([.01, .02, .03, .04], [.01, .02, .03, .04])
    table = table[~((table["step"] == 3) & (table["layer"] == 3))]
    fig = plot.gradient_per_layer({"a": table, "b": runs["lr=0.05"]})
    (line,) = [ln for ln in fig.axes[1].get_lines() if ln.get_label().startswith("a")]
    assert list(np.asarray(line.get_xdata(), float)) == [1.0, 2.0, 4.0]


def test_plot_training_curves_of_a_diverged_history_says_so():
    """`plot.training_curves(history)` in a notebook, of `dl.fit` with lr 50 on a 6-layer
    ReLU net with N(0, 1) weights (losses 200, 7e22, then NaN after step 2's update): the
    figure drew two finite points and no word of the divergence the report's figure names."""
    from depthlab import plot
    from depthlab.training.history import DivergenceReport

    class _History:
        divergence = DivergenceReport(step=2, epoch=2, loss=float("nan"), layer="dense2",
                                      nonfinite_parameters=[])

        def steps_frame(self):
            return pd.DataFrame({"step": [1, 2], "loss": [199.8, 6.98e22]})

        def epochs_frame(self):
            return pd.DataFrame()

        def evals_frame(self):
            return pd.DataFrame()

    fig = plot.training_curves(_History())
    assert fig._suptitle is not None and fig._suptitle.get_text() == \
        "diverged after the update of step 2 (loss not finite): not drawn"
    assert plot.training_curves(_History(), title="mine")._suptitle.get_text() == "mine"


def test_labels_cut_short_stay_apart_without_a_numbered_suffix():
    """Four lr=10 runs of a sweep over model.activation x train.lr named in a panel's title
    (14 characters each): "…model.…r=10.0", "…model.acti…#1", "…#2", "…#3", which named
    no activation; the shared key "model.activation=" gives way first when that keeps them
    apart."""
    from depthlab.report.figures import cut_labels

    acts = ("tanh", "relu", "sigmoid", "leaky_relu")
    labels = [f"mysweep:model.activation={a},train.lr=10.0" for a in acts]
    every = labels + [f"mysweep:model.activation={a},train.lr=0.1" for a in acts]
    cut = cut_labels(labels, 14, every)
    assert len(set(cut)) == 4 and not any("#" in t for t in cut), cut
    assert all(a[:4] in t for a, t in zip(acts, cut)), cut


def test_a_dollar_in_a_run_name_is_drawn_as_itself():
    """`plot.gradient_per_layer({"cost $\\frac{1$": a, "b": b})`: the legend typeset the name
    as math and the figure stopped (ParseSyntaxException); two names with one "$" each in a
    panel's title ("run $a: same values as run b$") were one formula."""
    import io

    from depthlab import plot

    table = _grad_table([.01, .02, .03], [.01, .02, .03])
    fig = plot.gradient_per_layer({"cost $\\frac{1$": table, "b": table.assign(value=.5)})
    fig.savefig(io.BytesIO(), format="png")
    fig = plot.gradient_per_layer({"run $a": table, "run b$": table})
    fig.savefig(io.BytesIO(), format="png")
    title = fig.axes[1].get_title()
    assert "$" in title and title.count(r"\$") == title.count("$"), title
    # the report escapes its labels itself: an escaped "\$" is not escaped twice (drawn "\$")
    fig = plot.gradient_per_layer({r"run \$a": table, r"run b\$": table})
    assert fig.axes[1].get_title().count("\\\\") == 0, fig.axes[1].get_title()
