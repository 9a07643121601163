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
