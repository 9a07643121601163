"""theoryhunt39: gradient variances far below float64's range are kept in log space."""

from __future__ import annotations

import math

import depthlab as dl
from depthlab.theory.variance import propagate


def test_deep_sigmoid_prediction_does_not_underflow_to_zero():
    # 400 sigmoid layers (Glorot): Var(dL/ds_1) / Var(dL/ds_L) ~ e^-1100 underflows float64,
    # but its square root (~1e-240) does not: the relative std must not read 0.0.
    spec = dl.ModelSpec(sizes=[16] + [16] * 400 + [4], activation="sigmoid",
                        init="glorot_normal")
    pred = dl.theory.predict_gradients(spec)
    rel = pred.relative_std
    assert pred.covered
    assert all(r is not None and r > 0.0 for r in rel), rel[:3]
    # each layer multiplies the std by sqrt(n v E[f'^2]) = sqrt(E[f'^2]) < 1/4 (n v = 1)
    logs = [math.log(r) for r in rel]
    steps = [a - b for a, b in zip(logs, logs[1:])]
    assert all(-2.0 < s < -1.0 for s in steps[:-1]), steps[:5]
    assert "underflow" in pred.note


def test_log_column_matches_the_variance_where_representable():
    df = propagate([8, 8, 8, 8], "tanh", "glorot_normal")
    assert all(math.isclose(math.exp(lv), v, rel_tol=1e-12)
               for lv, v in zip(df["grad_pre_log_var"], df["grad_pre_var"]))


def test_a_wide_output_layer_is_named_in_the_note():
    # relu/He 5x300 with mse on N(0, 1) targets: first layer measured 1.5x the prediction at
    # 100 outputs, 1.9x at 300 (6 seeds): the output gradient f - y is correlated with W_out
    wide = dl.theory.predict_gradients(dl.ModelSpec(sizes=[32, 64, 64, 64, 64], activation="relu",
                                                    init="he_normal"))
    assert "output" in wide.note and "correlated" in wide.note
    narrow = dl.theory.predict_gradients(dl.ModelSpec(sizes=[32, 64, 64, 64, 4],
                                                      activation="relu", init="he_normal"))
    assert "correlated" not in narrow.note
