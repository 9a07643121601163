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
