"""Round 17, NumPy science: the doctor's claims, theory and probes on the cases a user meets
(activation and initializer objects, degenerate data and inputs)."""

from __future__ import annotations

import numpy as np

import depthlab as dl
from depthlab.activations import Tanh


def task(n=200, d=8, k=3, seed=1):
    """A noisy linear 3-class task (float32)."""
    g = np.random.default_rng(seed)
    x = g.normal(size=(n, d)).astype(np.float32)
    y = np.argmax(x @ g.normal(size=(d, k)) + 0.3 * g.normal(size=(n, k)), axis=1)
    return x, y


X, Y = task()


def test_an_activation_object_gets_the_findings_of_its_name():
    kinds = {}
    for act in ("tanh", Tanh()):
        net = dl.mlp([8, 32, 32, 32, 32, 3], act, "normal", seed=0)
        d = dl.doctor(net, (X, Y), steps=5)
        kinds[str(act)] = {f.kind: f.prescription for f in d.findings}
    assert kinds["Tanh()"].get("init_mismatch") == {"init": "glorot_uniform"}
    assert kinds["Tanh()"] == kinds["tanh"]


def test_dead_relus_are_not_prescribed_the_zero_biases_they_have():
    from depthlab.diagnosis.prescriptions import for_dead_relu
    from depthlab.initializers import Constant, Zeros

    for bias in ("zeros", "Zeros", "constant", Zeros(), Constant(0.0)):
        changes, _ = for_dead_relu(1.0, 0.0, 0.3, 0.1, {"bias_init": bias})
        assert changes == {"lr": 0.01}, bias
    # batch normalization: the hidden Dense layers have no bias to set
    changes, _ = for_dead_relu(1.0, 0.0, 0.3, 0.1, {"bias_init": "ones", "batchnorm": True})
    assert "bias_init" not in changes
    changes, _ = for_dead_relu(1.0, 0.0, 0.3, 0.1, {"bias_init": Constant(0.5)})
    assert changes == {"bias_init": "zeros"}
    # end to end: a ReLU net killed by a large step, its biases Zeros()
    net = dl.mlp([8, 32, 32, 32, 32, 3], "relu", "he_normal", seed=0, bias_init=Zeros())
    d = dl.doctor(net, (X, Y), steps=30, lr=3.0)
    dead = [f for f in d.findings if f.kind == "dead_relu"]
    assert dead and "bias_init" not in dead[0].prescription


def test_lsuv_that_cannot_rescale_leaves_the_network_as_it_was():
    """LSUV on a batch giving a layer output variance 0 (all-zero inputs; a ReLU layer dead on
    every row) raised after it had replaced every weight by an orthogonal one."""
    from depthlab.initializers import Constant

    g = np.random.default_rng(0)
    cases = [(dl.mlp([3, 8, 8, 2], "tanh", seed=0), np.zeros((16, 3))),
             (dl.mlp([3, 8, 8, 2], "relu", seed=0, bias_init=Constant(-100.0)),
              g.normal(size=(16, 3)))]
    for net, x in cases:
        before = [p.value.copy() for p in net.parameters()]
        try:
            dl.lsuv(net, x)
        except ValueError as e:
            assert "output variance of dense" in str(e) and "\n" not in str(e)
        else:
            raise AssertionError("lsuv rescaled a layer of variance 0")
        for p, w in zip(net.parameters(), before):
            np.testing.assert_array_equal(p.value, w)
        assert all(d.x is None for d in net.dense_layers())  # no batch kept in the caches


def test_a_diverged_runs_step_is_the_same_in_its_finding_and_its_verification():
    """The divergence finding said 'the loss became non-finite at step 4' and its
    verification 'train loss nan (diverged at step 3)' (the updates before it)."""
    import re

    x = np.repeat(X[:, :1], 8, axis=1) * 50.0  # identity units, N(0, 1) weights: explodes
    d = dl.doctor(dict(sizes=[8] + [16] * 6 + [3], activation="identity", init="normal"),
                  (x, Y), steps=40, lr=0.01, verify=True)
    div = next(f for f in d.findings if f.kind == "divergence")
    at = int(re.search(r"non-finite at step (\d+)", div.message).group(1))
    assert d.baseline["diverged"] and d.baseline["diverged_step"] == at
    text = str(d)
    assert f"nan (diverged at step {at})" in text
    assert f"nan (diverged at step {at - 1})" not in text


def test_a_gradient_ratio_from_a_later_step_is_not_called_the_initializations():
    """With a zero output layer every hidden gradient is exactly 0 at step 0, so the ratio
    first measured at step 10 was reported as '9.31e+06x at initialization'."""
    net = dict(sizes=[8] + [32] * 12 + [3], activation="sigmoid", init="glorot_uniform")
    d = dl.doctor({**net, "output_init": "zeros"}, (X, Y), steps=30)
    f = next(f for f in d.findings if f.kind == "vanishing_gradients")
    assert "at initialization" not in f.message
    assert "x at step 10, the first probe with finite non-zero gradients" in f.message
    assert f.evidence["ratio_init_step"] == 10
    d = dl.doctor(net, (X, Y), steps=30)  # step 0 has gradients: the initialization's ratio
    f = next(f for f in d.findings if f.kind == "vanishing_gradients")
    assert "x at initialization)" in f.message and f.evidence["ratio_init_step"] == 0


def test_a_divergence_message_gives_each_rise_beside_its_own_losses():
    """The message put the metric (the smaller of the training losses' rise and the probe
    batch's) after the training losses it was not computed from: '... a best moving average
    of 0.5969: 1.75x' where those losses rose 1.79x (the probe batch's 1.75x). (Round 44: the
    run is a tanh net far past any rate that trains, whose loss rises and stays finite; a relu
    net at lr 3 on these data lost its units instead of diverging on another CPU's BLAS.)"""
    from depthlab.data import load_dataset

    data = load_dataset("digits", seed=0, standardize=True)
    d = dl.doctor(dl.mlp([64, 64, 64, 10], activation="tanh", seed=0), data, steps=200,
                  lr=100.0)
    f = d.finding("divergence")
    ev = f.evidence
    assert ev["rise"] != ev["probe_rise"] and ev["metric"] == min(ev["rise"], ev["probe_rise"])
    assert f"{ev['loss_step0']:.4g} at step 0" in f.message
    assert f": {ev['rise']:.3g}x, and the fixed probe batch's loss " \
           f"{ev['probe_rise']:.3g}x" in f.message


def test_an_auto_output_width_follows_the_loss_and_the_target():
    """For a regression loss "auto" took a 1-D y's largest value + 1 as class labels: 6
    outputs for targets up to 5.2 (then the loss refused pred (32, 6) against y (32,)) and
    sizes [4, 8, 0] for negative targets; multi-label binary cross-entropy got 1 output for a
    (n, 3) y; string labels were told that "auto" is resolved by `depthlab run`."""
    import pytest

    g = np.random.default_rng(0)
    x = g.normal(size=(40, 4))
    y_class = g.integers(0, 3, 40)
    for y, loss, width in [(g.normal(size=40) * 3, "mse", 1),
                           (-np.abs(g.normal(size=40)) - 1, "huber", 1),
                           (g.normal(size=(40, 2)), "mse", 2),
                           ((g.normal(size=(40, 3)) > 0).astype(float), "binary_cross_entropy", 3),
                           ((y_class > 0).astype(float), "binary_cross_entropy", 1),
                           (y_class, "cross_entropy", 3)]:
        d = dl.doctor(dict(sizes=[4, 8, "auto"]), (x, y), steps=2, loss=loss)
        assert d.config["sizes"][-1] == width, (loss, y.shape)
    with pytest.raises(ValueError, match=r'sizes\[-1\] = "auto" cannot be resolved from y, '
                                         r"which holds values of dtype <U1"):
        dl.doctor(dict(sizes=[4, 8, "auto"]), (x, np.array(["a", "b", "c"])[y_class]), steps=2)


def test_a_population_batch_norm_drift_is_not_called_a_lag_nor_cured_by_the_momentum():
    """Under bn_inference = "population" the statistics are the whole training set's under
    the final weights; a drift from the probe batch (held-out rows scaled x3) read 'running
    statistics lag the batch statistics' and got {'bn_momentum': 0.1}, verified 'BN drift
    2.134 -> 2.134: did not help' (inference does not use the running statistics)."""
    g = np.random.default_rng(1)
    x = g.normal(size=(300, 8)).astype(np.float32)
    y = np.argmax(x @ g.normal(size=(8, 3)), axis=1)
    cfg = dict(sizes=[8, 32, 32, 3], activation="relu", init="he_normal", batchnorm=True)
    data = (x, y, x[:100] * 3 + 1.0, y[:100])
    d = dl.doctor({**cfg, "bn_inference": "population"}, data, steps=30, lr=0.05)
    f = d.finding("bn_drift")
    assert f is not None and f.prescription == {}
    assert "lag" not in f.message and "population statistics" in f.message
    assert "momentum" not in f.prescription_text


def test_a_bad_doctor_callback_is_named_by_its_place_in_the_users_list():
    """dl.doctor(..., callbacks=[1]) said 'callbacks[1]=1 is not accepted' (the trainer's
    index, after the doctor's own probe recorder)."""
    import pytest

    from depthlab.training import Callback

    with pytest.raises(TypeError, match=r"^callbacks\[0\]=1 is not accepted: it has no method"):
        dl.doctor(dict(sizes=[8, 4, 3]), (X, Y), steps=2, callbacks=[1])
    with pytest.raises(TypeError, match=r"^callbacks\[1\]='x' is not accepted"):
        dl.doctor(dict(sizes=[8, 4, 3]), (X, Y), steps=2, callbacks=[Callback(), "x"])


def test_lsuv_measures_batch_norm_networks_as_training_does():
    """lsuv ran inference-mode passes: a bn_inference='population' network raised
    'RuntimeError: bn1: inference=population needs whole-training-set statistics' (stale as
    soon as LSUV rescales), and an EMA network was normalized with its initial running
    statistics (mean 0, variance 1), i.e. not at all, unlike every training step."""
    from depthlab.probes.stats import measurement_mode

    x = np.random.default_rng(0).normal(size=(64, 3)) * 5.0 + 2.0
    for inference in ("population", "ema"):
        net = dl.mlp([3, 16, 16, 2], "relu", seed=0, batchnorm=True, bn_inference=inference,
                     dtype="float64")
        running = [(b.running_mean.copy(), b.running_var.copy()) for b in net.batchnorms()]
        got = dl.lsuv(net, x, tol=1e-6)
        with measurement_mode(net):
            net.forward(x, training=True)
            final = [float(np.var(d.x @ d.W.value + (0 if d.b is None else d.b.value)))
                     for d in net.dense_layers()]
        net.clear_cache()
        np.testing.assert_allclose(got, final, rtol=1e-9)
        np.testing.assert_allclose(got, 1.0, rtol=1e-6)
        for b, (m, v) in zip(net.batchnorms(), running):  # no side effect on training state
            np.testing.assert_array_equal(b.running_mean, m)
            np.testing.assert_array_equal(b.running_var, v)
            assert b.num_batches == 0


def test_a_plain_prediction_for_narrow_layers_says_one_network_departs_from_it():
    """predict_gradients for layers of 1-8 units read 'Gaussian variance propagation at
    initialization (wide layers)', covered, with no word that one network of that width
    departs from it by factors (tanh, width 2, 20 seeds: the first layer's gradient a median
    0.53x the prediction, spread e^0.67; width 1: 0.12x)."""
    from depthlab.theory import predict_gradients

    g = np.random.default_rng(0)
    x, y = g.normal(size=(256, 16)), g.integers(0, 3, 256)
    ratios = []
    for seed in range(12):
        net = dl.mlp([16, 2, 2, 2, 2, 3], "tanh", "glorot_normal", seed=seed, dtype="float64")
        df = dl.probe(net, x, y)
        gm = df[df.quantity == "grad_pre_std"].set_index("layer").value
        ratios.append((gm[1] / gm[4]) / predict_gradients(net).relative_std[0])
    assert np.median(ratios) < 0.8 and max(ratios) / min(ratios) > 5  # far from one number
    note = predict_gradients(net).note
    assert "hidden layers as narrow as 2 units" in note and "depart from it" in note
    wide = predict_gradients(dl.mlp([16, 64, 64, 3], "tanh", "glorot_normal")).note
    assert "narrow" not in wide


def test_an_auto_input_width_names_inputs_that_are_not_rows_of_features():
    """x of shape (40, 2, 2) or (40,) with sizes ["auto", 8, 3] was told '"auto" is resolved
    from the data by `depthlab run`', though the doctor resolves it."""
    import re

    import pytest

    g = np.random.default_rng(0)
    y = g.integers(0, 3, 40)
    for x in (g.normal(size=(40, 2, 2)), g.normal(size=40)):
        with pytest.raises(ValueError, match=re.escape(
                f'sizes[0] = "auto" cannot be resolved from x with {x.ndim} dimension'
                f"{'s' if x.ndim != 1 else ''} (rows of shape {x.shape[1:]}); accepted: x of "
                "shape (n, features)")):
            dl.doctor(dict(sizes=["auto", 8, 3]), (x, y), steps=2)
    d = dl.doctor(dict(sizes=["auto", 8, 3]), (g.normal(size=(40, 5)), y), steps=2)
    assert d.config["sizes"][0] == 5
