"""Round 42 (reporthunt42): reports and the playground on inputs nobody tried."""

from __future__ import annotations

import pandas as pd


def _rows(quantities: dict[str, dict[int, list[float]]], steps=(0, 1, 2, 3)) -> pd.DataFrame:
    """A probe table: ``{quantity: {layer: [value per step]}}``."""
    return pd.DataFrame([{"step": s, "layer": layer, "quantity": q, "value": v}
                         for q, per in quantities.items() for layer, vals in per.items()
                         for s, v in zip(steps, vals)])


def test_a_net_whose_pre_activations_are_nan_from_step_0_gets_a_saturation_figure():
    """A torch run whose first weights were NaN (every pre-activation NaN at every recorded
    step, its ReLU's inactive fraction recorded as 0) stopped the whole report with
    ``ValueError: Axis limits cannot be NaN or Inf``: the panel was kept for its finite
    values, which were then left out as NaN-step values, and its y range was NaN. A panel
    left with nothing to draw says why instead."""
    from depthlab.report import figures

    nan = float("nan")
    probes = _rows({"pre_std": {1: [nan] * 4, 2: [nan] * 4},
                    "inactive_frac": {1: [0.0] * 4, 2: [nan] * 4},
                    "dead_frac": {1: [0.0] * 4, 2: [nan] * 4}})
    fig = figures.saturation_dead(probes)
    text = " ".join(t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text")))
    assert figures.figure_png(fig)[:4] == b"\x89PNG"
    assert "pre-activations NaN/inf" in text, text
