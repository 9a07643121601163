"""Round 18b, NumPy side: the doctor's rules and verdict lines, the orthogonal initializer's
declared variance."""

from __future__ import annotations

import math

import pytest

import depthlab as dl
from depthlab.data import load_dataset


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", seed=0, standardize=True)


def test_a_residual_stream_whose_variance_explodes_is_a_finding_cured_by_batch_norm(digits):
    # 12 residual relu blocks of 32 without batch norm (He init, adam 1e-3): the activation std
    # grows 46x from the first to the last hidden layer at initialization (each block adds its
    # branch's variance), the probe loss starts at 136 against chance 2.3, val acc 0.45 after
    # 200 steps (with batch norm: 0.86): it got a clean bill of health
    cfg = dict(sizes=[64] + [32] * 13 + [10], activation="relu", init="he_normal",
               residual=True)
    dg = dl.doctor(cfg, digits, steps=200, optimizer="adam", lr=1e-3, verify=True)
    f = dg.finding("exploding_activations")
    assert f is not None, str(dg)
    assert f.evidence["metric"] > 30 and f.evidence["n_blocks"] == 12, f.evidence
    assert "12 residual blocks" in f.message and "135.7" in f.message, f.message
    assert f.prescription == {"batchnorm": True}
    (v,) = [v for v in dg.verifications if v.kind == "exploding_activations"]
    assert v.helped and v.resolved and v.metric_after < 2, v.summary()


@pytest.mark.parametrize("cfg", [
    dict(residual=True, batchnorm=True),  # pre-activation blocks with BN: 1.0x
    dict(residual=True, activation="tanh", init="glorot_uniform"),  # bounded branches: 1.3x
    dict(residual=False),  # a plain net: not judged (its weights' growth is init_mismatch's)
])
def test_healthy_residual_and_plain_nets_get_no_exploding_activations_finding(digits, cfg):
    full = {"sizes": [64] + [32] * 13 + [10], "activation": "relu", "init": "he_normal", **cfg}
    dg = dl.doctor(full, digits, steps=20, optimizer="adam", lr=1e-3)
    assert "exploding_activations" not in dg.kinds, str(dg)


def test_the_gradient_ratio_of_an_even_number_of_probes_is_their_geometric_middle(digits):
    # sgd lr 5.0 kills the net: 2 probes with ratios [1.05, 4.2e6] gave their arithmetic mean
    # 2.1e6 ("median over 2 probes"), half the larger one; the median of the logs is 2.1e3
    dg = dl.doctor(dict(sizes=[64, 64, 64, 10], activation="relu", init="he_normal"), digits,
                   steps=200, lr=5.0)
    f = dg.finding("exploding_gradients")
    assert f is not None, str(dg)
    ev = f.evidence
    assert ev["ratio_end"] > 1e6 and ev["ratio_init"] < 2, ev
    assert ev["ratio"] == pytest.approx(math.sqrt(ev["ratio_init"] * ev["ratio_end"]),
                                        rel=1e-9)
    assert "median over 2 probes, their geometric mean" in f.message, f.message


def _regression(n: int = 300):
    # house.csv-like: y = X w + noise, 4 standardized features, targets of std 2.4
    import numpy as np

    g = np.random.default_rng(0)
    x = g.standard_normal((n, 4))
    return x, x @ np.array([1.5, -1.0, 1.2, 0.8]) + 0.3 * g.standard_normal(n)


def test_large_updates_that_keep_lowering_the_loss_are_not_a_too_high_learning_rate():
    # a healthy 4-16-1 tanh regression (mse, sgd lr 0.1, 10 steps): the first updates are
    # 0.17 of the hidden weights' norm while the weights grow to the targets' scale and the
    # probe loss falls at every step; it got a [high] lr_too_high whose cure (lr 0.01) left
    # the train loss far higher
    dg = dl.doctor(dict(sizes=[4, 16, 1], activation="tanh"), _regression(), loss="mse",
                   lr=0.1, steps=10, probe_every=1, batch_size=64)
    p = dg.probes
    ur = p[p.quantity == "update_ratio"].groupby("step")["value"].median()
    loss = p[(p.quantity == "loss") & (p.layer == 0)].set_index("step")["value"]
    high = ur[ur >= 0.1].index
    assert len(high) >= 2 and (loss.diff()[high] < 0).all()  # the case: large steps, loss down
    assert "lr_too_high" not in dg.kinds, str(dg)
    # a learning rate whose steps raise the loss is still flagged
    hot = dl.doctor(dict(sizes=[4, 16, 1], activation="tanh"), _regression(), loss="mse",
                    lr=1.5, steps=10, probe_every=1, batch_size=64)
    assert "lr_too_high" in hot.kinds, str(hot)


def test_the_torch_doctor_does_not_blame_the_lr_for_a_small_output_layer_learning_fast():
    torch = pytest.importorskip("torch")
    import depthlab.torch as dlt

    x, y = (torch.tensor(a, dtype=torch.float32) for a in _regression())
    dg = dlt.doctor(lambda: torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(),
                                                torch.nn.Linear(16, 1)),
                    (x, y[:, None]), loss_fn=torch.nn.MSELoss(), steps=10, verify=False,
                    optimizer=("sgd", {"lr": 0.1}))
    p = dg.probes
    assert p[p.quantity == "update_ratio"]["value"].max() > 0.3  # the 16->1 layer's
    assert "lr_too_high" not in dg.kinds, str(dg)


def test_a_did_not_help_decided_by_the_constant_prediction_says_so():
    # a cure that cut the loss 48% but only to a constant prediction's (ln 2) read
    # "1.36 -> 0.7089: did not help" with no reason
    from depthlab.diagnosis import Verification

    def v(after: float, chance: float) -> Verification:
        return Verification("saturation", {"batchnorm": True},
                            {"train_loss": 1.36, "val_acc": 0.6},
                            {"train_loss": after, "val_acc": 0.6}, "max saturated fraction",
                            0.9, 0.1, True, False, chance_loss=chance)

    text = v(0.7089, math.log(2)).summary()
    assert text.endswith("did not help (the train loss did not end below a constant "
                         "prediction's, 0.6931)"), text
    assert v(0.5, math.log(2)).summary().endswith("did not help")  # below it: not the reason
    assert v(0.7089, math.nan).summary().endswith("did not help")  # not known
    back = Verification.from_dict(v(0.7089, math.log(2)).to_dict())
    assert back.chance_loss == pytest.approx(math.log(2)) and str(back.summary()) == text


def test_the_doctor_records_the_constant_predictions_loss_on_each_verification(digits):
    from depthlab.diagnosis.doctor import constant_loss

    cfg = dict(sizes=[64] + [32] * 8 + [10], activation="relu", init="he_normal",
               residual=True)
    dg = dl.doctor(cfg, digits, steps=20, optimizer="adam", lr=1e-3, verify=True)
    assert dg.verifications, str(dg)
    want = constant_loss("cross_entropy", digits.y_train, 10)
    assert 2.2 < want < 2.31
    assert all(v.chance_loss == pytest.approx(want) for v in dg.verifications)


def test_a_cure_whose_metric_stays_above_the_threshold_does_not_read_plainly_resolved():
    # torch doctor, 10 sigmoid layers N(0, 1): the relu cure of mean_shift read "max |mean
    # activation| 0.5417 -> 0.4223: helped (finding resolved)": a ReLU's mean of 0.42 is above
    # the 0.25 threshold, only not judged (f(0) = 0)
    from depthlab.diagnosis import Verification

    def v(after: float) -> Verification:
        return Verification("mean_shift", {"activation": "relu"},
                            {"train_loss": 2.3, "val_acc": 0.1},
                            {"train_loss": 0.5, "val_acc": 0.8}, "max |mean activation|",
                            0.5417, after, True, True)

    text = v(0.4223).summary()
    assert text.endswith("helped (finding resolved: its rule no longer applies to this setup, "
                         "although the metric is still above its threshold 0.25)"), text
    assert v(0.1).summary().endswith("helped (finding resolved)")  # below it: resolved
    assert v(0.6).summary().endswith("although the metric did not fall)")


@pytest.mark.parametrize("shape", [(3, 4, 5), (3, 5, 4), (2, 3, 8, 6), (16, 9)])
@pytest.mark.parametrize("gain", [1.0, 1.3])
def test_the_orthogonal_initializers_declared_variance_of_a_shape_is_what_it_samples(shape,
                                                                                     gain):
    # (3, 4, 5) is drawn as a (12, 5) matrix with orthonormal columns: Var 1/12, where
    # variance(*compute_fans((3, 4, 5))) = 1/max(12, 15) = 1/15
    import numpy as np

    from depthlab.initializers import Orthogonal, compute_fans

    init = Orthogonal(gain)
    w = init.sample(shape, np.random.default_rng(0))
    assert init.shape_variance(shape) == pytest.approx(float(np.mean(w**2)), rel=1e-9)
    if len(shape) == 2:
        assert init.shape_variance(shape) == init.variance(*compute_fans(shape))
    # every other initializer: the variance of the fans
    assert dl.initializers.HeNormal().shape_variance(shape) == pytest.approx(
        2.0 / compute_fans(shape)[0])
