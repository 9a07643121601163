"""Round 22 (torchcli22): the user-facing paths of depthlab.torch runs: ``depthlab doctor
--torch`` and the report of Watch and torch doctor runs."""

from __future__ import annotations

import math

import pandas as pd

from depthlab import plot


def _branching_table(nan_at: tuple[int, int] | None = None) -> pd.DataFrame:
    """A Watch-like table of a model whose forward runs module ``b`` at even steps and ``c``
    at odd ones: ``c`` (numbered 4, first run at step 1) has no rows at step 0, ``b`` none at
    step 1. ``nan_at``: (step, layer) recorded as NaN (a diverged value)."""
    names = {1: "a", 2: "b", 3: "o", 4: "c"}
    rows = []
    for step in (0, 1):
        for layer in (1, 2, 3) if step == 0 else (1, 3, 4):
            value = 1e-3 * layer * (1 + step)
            if nan_at == (step, layer):
                value = math.nan
            for q in ("grad_pre_std", "act_std"):
                rows.append({"step": step, "layer": layer, "module": names[layer],
                             "quantity": q, "value": value})
        rows.append({"step": step, "layer": 0, "module": "", "quantity": "loss",
                     "value": 1.0})
    return pd.DataFrame(rows)


def _titles(fig) -> str:
    return "\n".join(ax.get_title() for ax in fig.axes)


def test_a_layer_not_run_at_a_step_is_not_called_not_finite():
    # a layer that did not run at the panel's step (no rows there) was titled
    # "c: not finite (NaN/inf)": nothing was measured, nothing diverged
    for draw in (plot.gradient_per_layer, plot.activation_per_layer):
        titles = _titles(draw({"branching": _branching_table()}))
        assert "not finite" not in titles, titles
        assert "c: not recorded at this step" in titles
        assert "b: not recorded at this step" in titles
    # a value recorded as NaN is still named as such
    titles = _titles(plot.gradient_per_layer({"nan": _branching_table(nan_at=(1, 1))}))
    assert "a: not finite (NaN/inf)" in titles, titles
    assert "b: not recorded at this step" in titles
