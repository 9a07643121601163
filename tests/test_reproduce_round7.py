"""Round 7 review of the reproductions: figures and claim texts that misled a reader.

Each test pins one fix: what a figure draws (bars, reference lines, scales) or what a claim's
"paper" and "measured" columns say, checked on small settings or on the helpers directly.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_limits

from depthlab.progress import ExperimentProgress
from depthlab.reproduce import (
    depth_ladder,
    glorot2010,
    he2015,
    klambauer2017,
    saxe2013,
    xu2016,
    yang2019,
)
from depthlab.reproduce.base import REGISTRY, Result


@pytest.fixture(autouse=True)
def _one_thread():
    with threadpool_limits(1):
        yield


def _legend_texts(ax) -> list[str]:
    leg = ax.get_legend()
    return [t.get_text() for t in leg.get_texts()] if leg is not None else []


# -- xu2016 -------------------------------------------------------------------------------------
def test_xu_activation_figure_draws_the_penalized_tanh_one_sided_slopes():
    """The penalized tanh has slopes 0.25 (s < 0) and 1 (s > 0) at its kink; the figure drew a
    single bar 'α = f'(0)' of 0.625 (their mean, a slope it has on neither side) and a tangent
    line of that slope."""
    _, tc = xu2016._taylor_table()
    fig = xu2016._fig_activations(tc)
    lines_ax, bars_ax = fig.axes[:2]
    heights = [p.get_height() for p in bars_ax.patches]
    assert not any(abs(h - 0.625) < 1e-6 for h in heights), heights
    assert sum(abs(h - 0.25) < 1e-6 for h in heights) == 3  # sigmoid twice, penalized tanh once
    # the dotted tangent of the penalized tanh (4th activation) follows 0.25 s left of 0
    dotted = [ln for ln in lines_ax.get_lines() if ln.get_linestyle() == ":"]
    s, y = (np.asarray(v) for v in dotted[3].get_data())
    assert y[s < 0] == pytest.approx(0.25 * s[s < 0], abs=1e-6)
    assert y[s > 0] == pytest.approx(s[s > 0], abs=1e-6)


# -- he2015 -------------------------------------------------------------------------------------
HE_SMALL = dict(width=32, steps=12, probe_every=6, n_probe=64, train_ratio=0.05, seeds=(1,))


def test_he_summary_and_loss_panel_say_momentum_and_mark_the_schedule(monkeypatch):
    """The summary said 'plain SGD' (it is SGD with momentum 0.9 and a step divided by 10
    twice); the loss panel's grey line at ln 10 had no legend entry and the two divisions of
    the step, which make the loss drop, were not marked."""
    summary = REGISTRY["he2015"].summary
    assert "plain SGD" not in summary and "momentum 0.9" in summary
    monkeypatch.setattr(he2015, "_settings", lambda quick: dict(HE_SMALL))
    res = he2015.run(quick=True)
    ax = res.figures["loss_and_gradients"].axes[0]
    texts = _legend_texts(ax)
    assert any("ln 10" in t for t in texts), texts
    assert any("lr ÷ 10" in t for t in texts), texts
    vlines = [ln for ln in ax.get_lines() if ln.get_linestyle() == "--"]
    assert sorted(float(ln.get_xdata()[0]) for ln in vlines) == [8, 10]  # 2/3, 5/6 of 12
    assert "seed(s)" not in ax.get_title()
    caption = res.captions["loss_and_gradients"]  # says what to look at, not the axes again
    assert "ln 10" in caption and "2^(29/2)" in caption and "Xavier" in caption


# -- saxe2013 -----------------------------------------------------------------------------------
def test_saxe_figures_show_the_gaussian_spread_and_mark_round_off():
    """Linear counts hid the Gaussian singular values under the orthogonal spike (one bin of
    every σ = 1); condition numbers above ~1e16 are float64 round-off (lower bounds) and were
    drawn like the others."""
    svs, conds = {}, {}
    for label, init in saxe2013.INITS.items():
        svs[label], conds[label] = saxe2013.product_singular_values(
            init, 30, 16, seed=1, checkpoints=(1, 4, 16))
    med = pd.DataFrame(conds)
    fig = saxe2013._fig_products(svs, med, 30)
    hist_ax, cond_ax = fig.axes[:2]
    assert hist_ax.get_yscale() == "log"
    assert any("round-off" in t for t in _legend_texts(cond_ax)), _legend_texts(cond_ax)
    assert [t.get_text() for t in cond_ax.get_xticklabels()] == ["1", "4", "16"]


# -- yang2019 -----------------------------------------------------------------------------------
def test_yang_lr_claim_does_not_credit_the_paper_with_the_learning_rate_test(monkeypatch,
                                                                               digits):
    """The paper says the explosion cannot be removed by choosing σ_w, σ_b; the smaller
    learning rate is this project's test. The claim's paper column said 'cannot be removed by
    tuning', which the paper does not say."""
    monkeypatch.setattr(yang2019, "train_accuracy", lambda *a, **k: (0.1, False))
    d = yang2019.Inputs([10], [32], [0], batch_width=32, ds=digits, dname="digits", steps=5,
                        train_width=8, progress=ExperimentProgress.planned(
                            [yang2019.cure_label(c[0]) for c in yang2019.cures(5)]))
    res = Result("yang2019", "t")
    yang2019.stage_cures(d, res)
    lr = next(c for c in res.claims if c.claim.startswith("a 10x smaller learning rate"))
    assert "by tuning" not in lr.paper
    assert "σ_w, σ_b" in lr.paper and "this project" in lr.paper
    assert "residual" in res.captions["cures"] and "chance" in res.captions["cures"]


@pytest.fixture(scope="module")
def digits():
    from depthlab.data import load_dataset

    return load_dataset("digits", seed=0, standardize=True)


# -- glorot2010 ---------------------------------------------------------------------------------
def test_glorot_gradient_claim_states_one_ratio_direction():
    """The paper column quoted layer 5 / layer 1 ≈ 9.5 while 'measured' printed layer 1 /
    layer 5 (≈ 0.1) as 'ratio': a reader compared 9.5 with 0.1."""
    shapes = glorot2010.shapeset_split(200, 10, 300, seed=0)
    cfg = dict(init_width=64, jacobian_examples=1)
    d = glorot2010.Inputs(shapes, None, cfg,
                          ExperimentProgress.planned([glorot2010.INIT_LABEL]))
    res = Result("glorot2010", "t")
    glorot2010.stage_at_init(d, res)
    c = next(c for c in res.claims if "back-propagated dC/ds" in c.claim)
    assert "layer 1/layer 5 ≈ 0.11" in c.paper
    assert f"layer 1/layer 5 {c.value:.2f}" in c.measured
    # the gradient histograms' ticks (~1e-4) were long labels running into each other
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = res.figures["fig6_7_at_init"]
    FigureCanvasAgg(fig).draw()
    for ax in fig.axes[3:5]:  # bottom row: dC/ds histograms
        assert ax.xaxis.get_offset_text().get_text(), "one shared exponent expected"
    assert "standard init" in res.captions["fig6_7_at_init"]


def test_glorot_table1_figure_shows_chance_and_a_log_scale_for_mnist():
    """MNIST errors span 1.6% (paper) to ~90% (an unlearned sigmoid net): on a linear axis the
    paper's bars were slivers; nothing showed that ~83% on Shapeset is chance; the legend sat
    on the first bar."""
    rows = []
    measured = {"shapeset": [0.85, 0.76, 0.85, 0.76, 0.83], "mnist5k": [0.14, 0.08, 0.12, 0.09,
                                                                        0.91]}
    chance = {"shapeset": 0.833, "mnist5k": 0.886}
    for dname, errs in measured.items():
        for (label, _, _), e in zip(glorot2010.TABLE_CONFIGS, errs):
            rows.append(dict(data=dname, net=label, test_error=e, chance_error=chance[dname],
                             paper_error=glorot2010.PAPER_TABLE1[dname][label] / 100))
    fig = glorot2010._plot_table(pd.DataFrame(rows))
    shp, mn = fig.axes[:2]
    assert shp.get_yscale() == "linear" and mn.get_yscale() == "log"
    for ax, dname in ((shp, "shapeset"), (mn, "mnist5k")):
        assert any(t.startswith("chance") for t in _legend_texts(ax))
        assert ax.get_ylim()[1] > 1.2 * 100 * max(measured[dname])  # headroom for the legend


# -- captions -----------------------------------------------------------------------------------
def test_figures_carry_captions_that_say_what_a_reader_sees(monkeypatch, digits):
    """No experiment set ``Result.captions``: every page caption was built from the axis labels
    ('mean |dL/dW| of layer 1 against SGD step'). Each figure now has its own."""
    res = Result("xu2016", "t")
    d = xu2016.Inputs(width=8, seeds=[0], ds=digits, dname="digits", train_width=8,
                      train_steps=1, train_seeds=[0],
                      progress=ExperimentProgress.planned([xu2016.TAYLOR_LABEL]))
    xu2016.stage_sanity_checks(d, res)
    assert "0.25" in res.captions["activations"]

    monkeypatch.setattr(klambauer2017, "_settings",
                        lambda quick: dict(depths=(2,), width=8, steps=10))
    monkeypatch.setattr(klambauer2017, "forward_moments", _small_moments)
    res = klambauer2017.run(quick=True)
    assert set(res.captions) == set(res.figures)
    assert "Theorem 1" in res.captions["moments_per_layer"]
    assert "roughness" in res.captions["training_loss"]


_FORWARD_MOMENTS = klambauer2017.forward_moments


def _small_moments(mu0: float, nu0: float):
    return _FORWARD_MOMENTS(mu0, nu0, width=128, n=200)


def test_depth_ladder_legend_does_not_cover_the_ladders():
    """Seven recipes' legend sat in the lower left, over the points of the ladders that fail
    (sigmoid + fan_in_uniform at depth 4: 0.11 of the reference)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    rows = [dict(recipe=r, depth=d, train_acc=a) for r in depth_ladder.RECIPES
            for d, a in ((2, 0.99), (4, 0.1), (10, 0.1))]
    full = pd.DataFrame(rows)
    full["fraction of reference"] = full.train_acc / 0.99
    fig = depth_ladder._fig(full, [2, 4, 10], 0.99)
    FigureCanvasAgg(fig).draw()
    ax = fig.axes[0]
    renderer = fig.canvas.get_renderer()
    assert ax.get_legend().get_window_extent(renderer).x0 >= ax.get_window_extent(renderer).x1
    assert not any(t.get_text() for t in ax.get_xticklabels(minor=True))
