"""Round 18, NumPy side: the doctor's verdicts, theory notes and probes on cases the earlier
rounds left out."""

from __future__ import annotations

import math

import numpy as np
import pytest

import depthlab as dl
from depthlab.data import load_dataset
from depthlab.diagnosis.doctor import constant_loss


def test_a_cure_that_only_reaches_a_constant_predictions_loss_did_not_help():
    # the playground's sigmoid net (10 x 32, N(0, 1) weights, lr 0.1, momentum 0.9) on the
    # 2-D spirals: glorot_uniform took the train loss 0.7076 -> 0.6932 (ln 2: 50/50 for every
    # input) with the held-out accuracy unchanged at 0.485, and read "helped"
    # (siginit29: N(0, 1) at width 32 is 32x Glorot's variance, below the sigmoid's critical
    # 103x, so Glorot's is no longer prescribed for it; N(0, 36), 1152x, chaotic, still gets it)
    data = load_dataset("spirals", seed=0, standardize=True, n_classes=2, noise=0.1)
    cfg = dict(sizes=[2] + [32] * 10 + [2], activation="sigmoid", init="normal", seed=0)
    dg = dl.doctor(cfg, data, steps=200, lr=0.1, optimizer_kwargs={"momentum": 0.9},
                   verify=True)
    assert not [v for v in dg.verifications if v.prescription == {"init": "glorot_uniform"}]
    # a cure that learned something still helped (batch norm: held-out accuracy up)
    assert any(v.helped for v in dg.verifications if v.prescription.get("batchnorm"))
    cfg["init"] = dl.initializers.get_initializer("normal", std=6.0)
    dg = dl.doctor(cfg, data, steps=200, lr=0.1, optimizer_kwargs={"momentum": 0.9},
                   verify=True)
    glorot = [v for v in dg.verifications if v.prescription == {"init": "glorot_uniform"}]
    assert glorot, dg.verifications
    chance = constant_loss("cross_entropy", data.y_train, 2)
    assert abs(chance - math.log(2)) < 1e-3
    for v in glorot:
        assert v.after["train_loss"] > 0.99 * chance  # no better than a constant prediction
        assert not v.helped, v.summary()


def test_constant_loss_is_the_loss_of_the_best_constant_prediction():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 500)
    freq = np.bincount(y, minlength=4) / y.size  # class 3 never appears
    for eps in (0.0, 0.2):
        m = (1 - eps) * freq + eps / 4
        with np.errstate(divide="ignore"):
            z = np.tile(np.log(m), (y.size, 1))  # the optimum constant logits
        want = dl.loss("cross_entropy", label_smoothing=eps).forward(z, y)
        got = constant_loss(dl.loss("cross_entropy", label_smoothing=eps), y, 4)
        assert got == pytest.approx(want, rel=1e-12)
    yb = (rng.random((300, 2)) < [0.2, 0.7]).astype(float)
    mb = yb.mean(axis=0)
    zb = np.tile(np.log(mb / (1 - mb)), (300, 1))
    assert constant_loss("bce", yb) == pytest.approx(dl.loss("bce").forward(zb, yb), rel=1e-12)
    yr = rng.normal(size=(300, 3))
    assert constant_loss("mse", yr) == pytest.approx(
        dl.loss("mse").forward(np.tile(yr.mean(axis=0), (300, 1)), yr), rel=1e-12)
    # huber: each column's best constant since numpy20's 183008b (was NaN)
    from scipy.optimize import minimize_scalar

    hub = dl.loss("huber")
    best = [minimize_scalar(lambda c, j=j: hub.forward(np.full((300, 1), c), yr[:, j:j + 1]),
                            bracket=(-1.0, 1.0), tol=1e-12).x for j in range(3)]
    assert constant_loss("huber", yr) == pytest.approx(
        hub.forward(np.tile(best, (300, 1)), yr), rel=1e-9)


def _first_over_last(net, x):
    y = np.random.default_rng(1).integers(0, 2, len(x))
    t = dl.probe(net, x, y)
    g = t[t.quantity == "grad_pre_std"].set_index("layer")["value"]
    return float(g.loc[1] / g.loc[g.index.max()])


def test_a_prediction_for_few_input_features_says_it_departs_near_the_input():
    # selu + LeCun and relu + batch norm on 2-D inputs (the playground's spirals): measured
    # first-layer gradients 2-5x the prediction, and the note only said "wide layers"
    for cfg in (dict(activation="selu", init="lecun_normal"),
                dict(activation="tanh", init="glorot_normal", residual=True),
                dict(activation="relu", init="he_normal", batchnorm=True)):
        few = dl.theory.predict_gradients(dict(sizes=[2] + [96] * 20 + [2], **cfg))
        many = dl.theory.predict_gradients(dict(sizes=[64] + [96] * 20 + [2], **cfg))
        assert "2 input features" in few.note and "input feature" not in many.note
        assert few.covered
        if cfg.get("batchnorm"):  # BN's path takes one length: the same numbers, a new note
            assert few.relative_std == many.relative_std
        elif not cfg.get("residual"):  # a plain net's averages over the examples' lengths
            assert few.relative_std[0] > many.relative_std[0]
    # relu without batch norm: each example's length cancels, no warning
    for act in ("relu", "leaky_relu", "identity"):
        plain = dl.theory.predict_gradients(dict(sizes=[2] + [96] * 20 + [2], activation=act))
        assert "input feature" not in plain.note
    # the departure it warns of (relu + BN, seed 0: 2.1x at 2 features, 0.95x at 64)
    cfg = dict(activation="relu", init="he_normal", batchnorm=True, seed=0, dtype="float64")
    pred = dl.theory.predict_gradients(dict(sizes=[2] + [96] * 20 + [2], **cfg)).relative_std[0]
    g = np.random.default_rng(0)
    gap2 = _first_over_last(dl.mlp([2] + [96] * 20 + [2], **cfg), g.normal(size=(256, 2))) / pred
    gap64 = _first_over_last(dl.mlp([64] + [96] * 20 + [2], **cfg),
                             g.normal(size=(256, 64))) / pred
    assert gap2 > 1.5 and 0.75 < gap64 < 1.3, (gap2, gap64)


def test_infinite_numbers_of_a_diagnosis_come_back_from_its_json():
    # a divergence's metric is inf: 'loss rise ... inf -> inf: did not help' came back from
    # `depthlab doctor --json` (strict JSON: null) as 'nan -> nan'
    import json

    from depthlab.diagnosis import Diagnosis, Finding, Verification

    inf = math.inf
    f = Finding("divergence", [], {"metric": inf, "threshold": 1.5, "step": 2, "low": -inf,
                                   "gap": math.nan}, "Training diverged.", {"lr": 0.001})
    v = Verification("divergence", {"lr": 0.001}, {"train_loss": math.nan, "diverged": True},
                     {"train_loss": 0.5, "val_acc": 0.9, "spread": inf},
                     "loss rise (end / min(step 0, best))", inf, 1.2, True, True)
    dg = Diagnosis([f], {"train_loss": math.nan}, pd_empty(), {"sizes": [2, 3, 2]},
                   {"steps": 3}, [v])
    text = json.dumps(dg.to_dict(), allow_nan=False)  # strict JSON still
    back = Diagnosis.from_dict(json.loads(text))
    bf, bv = back.findings[0], back.verifications[0]
    assert bf.evidence["metric"] == inf and bf.evidence["low"] == -inf
    assert math.isnan(bf.evidence["gap"]) and bf.evidence["step"] == 2
    assert bv.metric_before == inf and bv.metric_after == 1.2 and bv.after["spread"] == inf
    assert math.isnan(bv.before["train_loss"])
    assert "inf -> 1.2" in bv.summary() and bv.summary() == v.summary()
    assert str(back) == str(dg)
    # a finite diagnosis's JSON is as before: no extra entry
    assert "infinite" not in json.loads(json.dumps(Finding("x", [], {"metric": 1.0}, "").to_dict()))


def pd_empty():
    import pandas as pd

    return pd.DataFrame({"step": [], "layer": [], "quantity": [], "value": []})


def test_probes_of_an_exploding_net_far_above_chance_are_not_left_out_as_fitted():
    # a 31-block residual relu net without batch norm starts at a probe loss of 126705 and
    # trains to 93 (chance: ln 10 = 2.3); the probes below 1% of step 0's loss were left out
    # as "fitted", so the exploding finding was the median of 2 of its 11 probes
    data = load_dataset("digits", seed=0, standardize=True)
    dg = dl.doctor(dict(sizes=[64] + [16] * 31 + [10], activation="relu", init="he_normal",
                        residual=True), data, steps=100, optimizer="adam", lr=1e-3)
    loss = dg.probes.query("layer == 0 and quantity == 'loss'")["value"].to_numpy()
    assert loss[0] > 1e5 and (loss[1:] < 0.01 * loss[0]).sum() >= 8 and loss.min() > 10
    f = dg.finding("exploding_gradients")
    assert f is not None and "median over 11 probes" in f.message, f.message


def test_units_that_die_behind_too_small_weights_get_the_he_init_not_a_smaller_lr():
    # relu with N(0, 0.05) weights, 10 hidden layers, sgd 0.01 on digits: 20% of the top
    # layer's units dead at init, 89% after 200 steps at a loss of ln 10; the cure was "units
    # died during training: a 10x smaller learning rate", which did not help (0.89 -> 0.61)
    from depthlab.diagnosis.prescriptions import for_dead_relu

    data = load_dataset("digits", seed=0, standardize=True)
    dg = dl.doctor(dict(sizes=[64] + [64] * 10 + [10], activation="relu",
                        init=dl.initializers.normal(std=0.05)), data, steps=200, verify=True)
    f = dg.finding("dead_relu")
    assert f is not None and f.evidence["dead_frac_init_max"] <= 0.3
    assert f.prescription == {"init": "he_normal"}, f.prescription
    v = next(v for v in dg.verifications if v.kind == "dead_relu")
    assert v.helped and v.metric_after < 0.3, v.summary()
    # with batch norm the weights' scale does not matter: still the learning rate
    assert for_dead_relu(0.08, 0.2, 0.3, 0.01, {"batchnorm": True}) == (
        {"lr": 0.001}, for_dead_relu(1.0, 0.2, 0.3, 0.01, {})[1])


def test_a_batch_norm_drift_that_dropout_causes_is_not_called_a_lag():
    # dropout 0.5 before batch norm: the running variance is taken with dropout on, ~2x what
    # inference feeds the layer (measured e^0.74 .. e^0.95 in BN layers 2-6, e^-0.05 in layer
    # 1); the finding said "running statistics lag the batch statistics"
    data = load_dataset("digits", seed=0, standardize=True)
    dg = dl.doctor(dict(sizes=[64] + [64] * 6 + [10], activation="relu", init="he_normal",
                        batchnorm=True, dropout=0.5), data, steps=200, lr=0.05)
    f = dg.finding("bn_drift")
    assert f is not None and 1 not in f.layers
    assert "lag" not in f.message and "Dropout 0.5 before it" in f.message, f.message
    assert "variance shift" in f.message and "= 2x" in f.message
    from depthlab.diagnosis.rules import RunContext, _dropout_variance_shift

    ctx = RunContext.__new__(RunContext)  # only its config is read
    drift = {"mean_shift": 0.06, "log_var_ratio": 0.86}
    ctx.config = {"dropout": 0.5, "input_dropout": 0.0}
    assert _dropout_variance_shift(ctx, 1, drift) == ""  # no dropout before the first BN
    assert _dropout_variance_shift(ctx, 2, drift)
    ctx.config = {"dropout": 0.0, "input_dropout": 0.0}
    assert _dropout_variance_shift(ctx, 2, drift) == ""
    ctx.config = {"dropout": 0.5}
    assert _dropout_variance_shift(ctx, 2, {"mean_shift": 1.2, "log_var_ratio": 0.86}) == ""


def test_a_plain_prediction_for_a_deep_narrow_net_says_one_network_departs_from_it():
    # relu + He, 100 layers of width 64: predicted first/last gradient ratio 1.0, measured
    # 0.16-0.37 over 4 seeds, and the note only said "wide layers"
    cfg = dict(sizes=[64] + [64] * 100 + [3], activation="relu", init="he_normal")
    pred = dl.theory.predict_gradients(cfg)
    assert pred.covered and "depth / width = 1.56" in pred.note, pred.note
    assert pred.relative_std[0] == pytest.approx(1.0)
    g = np.random.default_rng(0)
    gap = _first_over_last(dl.mlp(**cfg, seed=0, dtype="float64"), g.normal(size=(256, 64)))
    assert gap < 0.5, gap
    for sizes in ([64] + [64] * 20 + [3], [64] + [256] * 100 + [3]):
        assert "depth / width" not in dl.theory.predict_gradients(
            dict(cfg, sizes=sizes)).note


def test_probe_runs_small_products_on_one_blas_thread(monkeypatch):
    # dl.probe ran its products on the default BLAS pool: on a loaded 2-core machine a
    # 100-layer net of width 64 (256 rows) took 0.1-1.9 s, 0.07-0.12 s with the training
    # loop's choice (depthlab.threads: one thread below 2**24 multiply-adds)
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from depthlab.layers.dense import Dense
    from depthlab.threads import cores_available, user_threads

    if cores_available() < 2 or user_threads() is not None:
        pytest.skip("the default pool is already one thread here")
    def numpy_pool():  # NumPy's own BLAS (scipy's, loaded later, is another library)
        pools = [i["num_threads"] for i in threadpoolctl.threadpool_info()
                 if "numpy" in i["filepath"]]
        if not pools:
            pytest.skip("NumPy's BLAS is not one threadpoolctl finds")
        return max(pools)

    seen = []
    backward = Dense.backward

    def recording(self, grad, input_grad=True):
        seen.append(numpy_pool())
        return backward(self, grad, input_grad)

    monkeypatch.setattr(Dense, "backward", recording)
    g = np.random.default_rng(0)
    dl.probe(dl.mlp([64, 64, 64, 3], seed=0), g.normal(size=(256, 64)), g.integers(0, 3, 256))
    assert seen and set(seen) == {1}, seen
    assert numpy_pool() > 1  # restored


def test_lsuv_runs_small_products_on_one_blas_thread(monkeypatch):
    # LSUV's passes ran on the default BLAS pool: a 50-layer net of width 64 on 256 rows took
    # 2.4-18 s on a loaded 2-core machine, 0.4 s with the training loop's choice
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from depthlab.layers.dense import Dense
    from depthlab.threads import cores_available, user_threads

    if cores_available() < 2 or user_threads() is not None:
        pytest.skip("the default pool is already one thread here")
    seen = []
    forward = Dense.forward

    def recording(self, x, training=True):
        pools = [i["num_threads"] for i in threadpoolctl.threadpool_info()
                 if "numpy" in i["filepath"]]
        if not pools:
            pytest.skip("NumPy's BLAS is not one threadpoolctl finds")
        seen.append(max(pools))
        return forward(self, x, training)

    monkeypatch.setattr(Dense, "forward", recording)
    g = np.random.default_rng(0)
    dl.lsuv(dl.mlp([64, 64, 64, 3], seed=0), g.normal(size=(256, 64)))
    assert seen and set(seen) == {1}, seen


def test_mc_dropout_runs_small_products_on_one_blas_thread(monkeypatch):
    # mc_dropout_predict's T passes ran on the default BLAS pool: 50 passes of a 30-layer net
    # of width 64 on 256 rows took 2-16 s on a loaded 2-core machine, 0.3-0.4 s with one thread
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from depthlab.layers.dense import Dense
    from depthlab.threads import cores_available, user_threads

    if cores_available() < 2 or user_threads() is not None:
        pytest.skip("the default pool is already one thread here")
    seen = []
    forward = Dense.forward

    def recording(self, x, training=True):
        pools = [i["num_threads"] for i in threadpoolctl.threadpool_info()
                 if "numpy" in i["filepath"]]
        if not pools:
            pytest.skip("NumPy's BLAS is not one threadpoolctl finds")
        seen.append(max(pools))
        return forward(self, x, training)

    monkeypatch.setattr(Dense, "forward", recording)
    g = np.random.default_rng(0)
    mean, std = dl.mc_dropout_predict(dl.mlp([64, 64, 64, 3], seed=0, dropout=0.3),
                                      g.normal(size=(256, 64)), 3, seed=0)
    assert seen and set(seen) == {1}, seen
    assert mean.shape == std.shape == (256, 3) and (std > 0).any()
