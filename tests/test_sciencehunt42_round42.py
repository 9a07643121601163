"""sciencehunt42 (round 42): theory against measurement."""

from __future__ import annotations

import numpy as np

import depthlab as dl
from depthlab.theory import predict_gradients
from depthlab.theory.predict import input_length_rule
from depthlab.theory.variance import propagate


def _first_layer_gradient(net, x: np.ndarray, rng: np.random.Generator) -> float:
    """Var(dL/ds_1) / Var(dL/ds_L) on the batch ``x``, the output gradient independent of the
    forward pass (mse against ``f(x) - noise``)."""
    y = net.forward(x, training=False) - rng.standard_normal((x.shape[0], net.n_outputs))
    df = dl.probe(net, x, y, loss="mse")
    g = df[(df.quantity == "grad_pre_std") & (df.layer >= 1)].sort_values("layer")["value"]
    g = g.to_numpy() ** 2
    return float(g[0] / g[-1])


def test_the_plain_prediction_averages_over_the_examples_input_lengths():
    # each example has its own |x|^2 / n_in (chi-square, relative std sqrt(2 / n_in)); tanh with
    # He's variance (sigma_w^2 = 2) has a q-dependent chi1, so the batch's gradient is the
    # average over examples, not the recursion at the average length. 4 features, 6 layers of
    # 256, 3 seeds: the one-length prediction 1.43-1.69x below the measurement (8 layers:
    # 1.46-1.56x, averaged 0.98-1.05x)
    sizes = [4] + [256] * 6 + [10]
    pred = predict_gradients(dl.mlp(sizes, "tanh", "he_normal"))
    ratios = []
    for seed in range(3):
        net = dl.mlp(sizes, "tanh", "he_normal", seed=seed, dtype="float64")
        rng = np.random.default_rng(seed)
        ratios.append(_first_layer_gradient(net, rng.standard_normal((256, 4)), rng)
                      / pred.relative_std[0] ** 2)
    assert 0.8 < float(np.median(ratios)) < 1.25, ratios
    t, w = input_length_rule(4, 1.0)  # Gamma(2, 1/2): mean 1, variance 2 / n_in
    assert abs(np.sum(w * t) - 1.0) < 1e-12 and abs(np.sum(w * t * t) - 1.0 - 2 / 4) < 1e-10


def test_the_length_average_is_the_recursion_averaged_over_sampled_lengths():
    # the rule's quadrature against Monte Carlo over chi-square lengths (gelu, He, 10 layers,
    # 8 features): the prediction's last-layer variance and first-layer gradient
    sizes = [8] + [64] * 10
    pred = predict_gradients(dl.mlp(sizes + [10], "gelu", "he_normal"))
    lengths = np.random.default_rng(0).chisquare(8, 4000) / 8
    pre, num, den = [], [], []
    for t in np.quantile(lengths, (np.arange(80) + 0.5) / 80):
        f = propagate(sizes, "gelu", "he_normal", input_var=float(t))
        pre.append(f["pre_var"].iloc[-1])
        num.append(f["grad_pre_var"].iloc[0] * f["deriv_sq"].iloc[-1])
        den.append(f["deriv_sq"].iloc[-1])
    assert abs(pred.frame["pre_var"].iloc[-1] / np.mean(pre) - 1) < 0.03
    assert abs(pred.relative_std[0] ** 2 / (np.mean(num) / np.mean(den)) - 1) < 0.03
    one = propagate(sizes, "gelu", "he_normal")  # one length: the last layer's 1.26x smaller
    assert pred.frame["pre_var"].iloc[-1] > 1.2 * one["pre_var"].iloc[-1]


def test_glorot2010s_setup_note_states_fig2s_width_departure(monkeypatch):
    # papers.md: 1-5 hidden layers of 1000 units; Fig. 2 ran 500 (quick: 200) with a fixed lr
    # and the note did not say so (Table 1's 100 says "the paper: 1000")
    from types import SimpleNamespace

    from depthlab.reproduce import glorot2010 as g

    fake = SimpleNamespace(y_train=[0], y_val=[0], y_test=[0])
    monkeypatch.setattr(g, "STAGES", ())
    monkeypatch.setattr(g, "shapeset_split", lambda *a, **k: fake)
    monkeypatch.setattr(g, "mnist_split", lambda *a, **k: fake)
    note = next(n for n in g.run(quick=True).notes if n.startswith("Setup"))
    fig2 = note[note.index("Fig. 2"):note.index("Figs. 6")]
    assert "the paper: 1000" in fig2 and "tunes it on validation" in fig2, fig2


def test_a_deep_relu_nets_prediction_warns_that_a_regression_loss_departs_from_it():
    # relu's output is f = J_l s_l at every layer, so mse's f - y carries J^T J s back: the first
    # layer's gradient measured 1.4x the prediction at 10 layers of 256, 2.8x at 20 of 128
    # (10 outputs; the old note fired only for outputs >= 0.25x the last hidden width)
    sizes = [32] + [128] * 16 + [10]
    pred = predict_gradients(dl.mlp(sizes, "relu", "he_normal"))
    ratios = []
    for seed in range(3):
        net = dl.mlp(sizes, "relu", "he_normal", seed=seed, dtype="float64")
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((256, 32))
        df = dl.probe(net, x, rng.standard_normal((256, 10)), loss="mse")
        g = df[(df.quantity == "grad_pre_std") & (df.layer >= 1)].sort_values("layer")["value"]
        ratios.append(float(g.iloc[0] ** 2 / g.iloc[-1] ** 2) / pred.relative_std[0] ** 2)
    assert np.exp(np.mean(np.log(ratios))) > 1.3, ratios  # what the note warns of
    assert "regression loss" in pred.note and "sum(1 / width) = 0.125" in pred.note, pred.note
    for quiet in ({"sizes": [32] + [128] * 12 + [10], "activation": "tanh"},
                  {"sizes": [32] + [300] * 5 + [10], "activation": "relu", "init": "he_normal"}):
        assert "regression loss" not in predict_gradients(quiet).note, quiet
