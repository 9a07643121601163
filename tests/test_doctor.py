"""The doctor: findings on known-sick networks, a clean bill for a healthy one, verified
prescriptions reported honestly."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from depthlab.diagnosis import KINDS, RULES, Diagnosis, Finding, Rule, Verification, doctor, rules
from depthlab.diagnosis.doctor import rank_findings
from depthlab.initializers import get_initializer
from depthlab.models import mlp


def clusters(n=800, d=20, k=4, seed=0):
    """Standardized Gaussian clusters (an easy, linearly separable task)."""
    g = np.random.default_rng(seed)
    centers = g.standard_normal((k, d)) * 6.0 / np.sqrt(d)
    y = g.integers(0, k, n)
    x = centers[y] + 0.5 * g.standard_normal((n, d))
    x = (x - x.mean(0)) / x.std(0)
    return x.astype(np.float32), y


X, Y = clusters()


def _check_finding(f: Finding):
    assert f.layers and all(isinstance(i, int) for i in f.layers)
    assert f.evidence["metric"] > f.evidence["threshold"]
    assert f.message.endswith(".") and any(ch.isdigit() for ch in f.message)
    assert f.severity in ("low", "medium", "high")


def test_healthy_network_gets_a_clean_bill():
    dg = doctor(dict(sizes=[20, 32, 32, 32, 4], activation="tanh", init="glorot_uniform"),
                (X, Y), lr=0.05, verify=True)
    assert isinstance(dg, Diagnosis)
    assert dg.healthy and dg.findings == [] and dg.verifications == []
    assert dg.baseline["val_acc"] > 0.9
    assert "clean bill" in str(dg)
    assert json.loads(json.dumps(dg.to_dict()))["healthy"] is True
    assert {"step", "layer", "quantity", "value"} <= set(dg.probes.columns)


def digits():
    from depthlab.data import load_dataset

    return load_dataset("digits", seed=0, standardize=True, val_fraction=0.1, test_fraction=0.2)


SMALL = [20, 32, 32, 32, 4]

# One case per finding kind the doctor must put FIRST (None: a clean bill of health). Each was
# measured: the metric of the expected finding lies in the band given (lower, upper).
CASES = {
    "healthy": (dict(sizes=SMALL, activation="tanh", init="glorot_uniform"), "X", dict(lr=0.05),
                None, None),
    # He et al. 2015: 30 ReLU layers with Glorot init; 19.9 depth scales (threshold 6)
    "vanishing": (dict(sizes=[20] + [32] * 30 + [4], activation="relu", init="glorot_uniform"),
                  "X", dict(lr=0.01), "vanishing_gradients", (12, 30)),
    # Yang et al. 2019: plain batch-normalized ReLU nets explode ~1.2x per layer; 7.3 scales
    "exploding": (dict(sizes=[20] + [32] * 30 + [4], activation="relu", init="he_normal",
                       batchnorm=True), "X", dict(lr=0.01), "exploding_gradients", (6, 10)),
    # biases at -3: every unit starts (and stays) off
    "dead units": (dict(sizes=SMALL, activation="relu", init="he_normal", bias_init=-3.0),
                   "X", dict(lr=0.05), "dead_relu", (0.9, 1.0)),
    # loss 2.6 -> 17.8 and still finite; updates of 25% of the weights' norm (46% at one of
    # the first 10 updates, measured since doctorfix26)
    "lr too high, finite": (dict(sizes=[64, 128, 128, 10], activation="tanh",
                                 init="glorot_uniform"), "digits",
                            dict(lr=2.0, optimizer_kwargs={"momentum": 0.9}), "lr_too_high",
                            (0.15, 0.6)),
    "lr too high, diverging": (dict(sizes=SMALL, activation="relu", init="he_normal"), "X",
                               dict(lr=3.0), "divergence", (np.inf, np.inf)),
    # running statistics start at (0, 1) and follow with momentum 0.001: variance off 1.9x
    "batch-norm drift": (dict(sizes=SMALL, activation="relu", init="he_normal", batchnorm=True,
                              bn_momentum=0.001, bn_ema_start="zero"), "X", dict(lr=0.05),
                         "bn_drift", (0.55, 0.75)),
    # sigmoid with N(0, 1) weights, 20 layers: 53% of layer 1's entries in the flat tails and
    # the loss stays at a constant prediction's (val acc 0.12). (Was SMALL tanh on 10X: 85%
    # saturated, but it fits as well as on X, val acc 1.0 both: no harm, no finding since
    # dochealth30b's SATURATION_FIT.)
    "saturation": (dict(sizes=[64] + [32] * 20 + [10], activation="sigmoid", init="normal"),
                   "digits", dict(lr=0.1), "saturation", (0.5, 0.6)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_case_table_expected_finding_first(case):
    config, data_name, kwargs, expected, band = CASES[case]
    if isinstance(config.get("bias_init"), float):
        from depthlab.initializers import constant

        config = {**config, "bias_init": constant(config["bias_init"])}
    data = {"X": (X, Y), "10X": (10 * X, Y), "digits": digits()}[data_name]
    dg = doctor(config, data, **kwargs)
    if expected is None:
        assert dg.healthy, dg.kinds
        return
    assert dg.kinds and dg.kinds[0] == expected, dg.kinds
    f = dg.findings[0]
    lo, hi = band
    assert lo <= f.evidence["metric"] <= hi, f.evidence["metric"]
    assert f.evidence["metric"] > f.evidence["threshold"]
    assert f.prescription and f.message.endswith(".")


@pytest.mark.parametrize("lr", [1.0, 2.0, 5.0])
def test_too_high_lr_on_tanh_is_flagged_as_the_learning_rate(lr):
    """Loss 2.6 -> 5 to 60 without a non-finite value: the first finding prescribes a smaller
    learning rate (it used to be 'saturation' with batch norm)."""
    dg = doctor(dict(sizes=[64, 128, 128, 10], activation="tanh", init="glorot_uniform"),
                digits(), lr=lr, optimizer_kwargs={"momentum": 0.9})
    assert dg.kinds[:2] == ["lr_too_high", "divergence"]
    assert dg.findings[0].prescription == {"lr": pytest.approx(lr / 10)}
    d = dg.finding("divergence").evidence
    assert d["loss_end"] > 2 * d["loss_step0"] and d["loss_best"] <= d["loss_step0"]


def test_thirty_layer_sigmoid_with_unit_normal_init_reports_vanishing():
    dg = doctor(dict(sizes=[64] + [64] * 30 + [10], activation="sigmoid", init="normal"),
                digits(), lr=0.1)
    f = dg.finding("vanishing_gradients")
    assert f is not None
    assert 30 < f.evidence["ratio"] < 1000 and f.evidence["metric"] > 6
    # Var(W) = 1 is 64x Glorot's, below the sigmoid's critical variance (103x Glorot's: its
    # mean field's chi1 = 0.80 here, Glorot's 0.056): no init_mismatch whose Glorot cure would
    # move the net deeper into the ordered phase; the saturation's cure is batch norm
    assert "init_mismatch" not in dg.kinds
    assert dg.finding("saturation") is None or \
        dg.finding("saturation").prescription == {"batchnorm": True}


def test_gradient_depth_scale_threshold():
    # the case: last/first 68.5 over 30 hidden layers = 1.157x per layer, 8.75 scales
    per_layer, scales = rules.gradient_depth_scales(68.5, 30)
    assert per_layer == pytest.approx(68.5 ** (1 / 29))
    assert scales == pytest.approx(2 * 30 * np.log(68.5) / 29)
    assert scales > rules.GRADIENT_DEPTH_SCALES
    # Glorot's standard init, 5 tanh layers: 9.5x is 5.6 scales -> not flagged
    assert rules.gradient_depth_scales(9.5, 5)[1] < rules.GRADIENT_DEPTH_SCALES
    assert np.isnan(rules.gradient_depth_scales(5.0, 1)[1])


def test_loss_trajectory_compares_with_step_zero_and_running_minimum():
    up = np.r_[2.3, np.linspace(5, 40, 99)]  # blows up at once: the first 10% already high
    t = rules.loss_trajectory(up)
    assert t["loss_step0"] == 2.3 and t["loss_best"] == 2.3 and t["rise"] > 10
    dip = np.r_[np.linspace(2.3, 0.2, 50), np.linspace(0.2, 0.6, 50)]  # lost its progress
    assert rules.loss_trajectory(dip)["rise"] > rules.DIVERGENCE_RISE
    g = np.random.default_rng(0)  # converged near zero with noise: the floor keeps it healthy
    low = np.r_[np.linspace(2.3, 0.01, 50), 0.01 + 0.02 * g.random(50)]
    assert rules.loss_trajectory(low)["rise"] < rules.DIVERGENCE_RISE


def test_rules_carry_kind_metric_and_threshold():
    assert KINDS == tuple(RULES) and len(set(KINDS)) == len(KINDS)
    for kind, rule in RULES.items():
        assert isinstance(rule, Rule) and rule.kind == kind and rule.metric
        assert rule.threshold > 0 and callable(rule.check)
    assert RULES["lr_too_high"].threshold == 0.1
    assert KINDS.index("lr_too_high") < KINDS.index("divergence")


def test_sigmoid_normal_init_mismatch_and_mean_shift():
    dg = doctor(dict(sizes=[20] + [32] * 8 + [4], activation="sigmoid", init="normal"),
                (X, Y), lr=0.05)
    # normal(std=1) vs Glorot 2/(32+32): a factor 32, below the sigmoid's critical variance
    # (103x Glorot's, where its mean field's chi1 reaches 1; Glorot's chi1 is 0.056): no mismatch
    assert dg.finding("init_mismatch") is None
    far = doctor(dict(sizes=[20] + [32] * 8 + [4], activation="sigmoid",
                      init=get_initializer("normal", std=6.0)), (X, Y), lr=0.05, steps=20)
    f = far.finding("init_mismatch")
    _check_finding(f)
    # normal(std=6) vs Glorot 2/(32+32): a factor 1152, 11x the critical variance
    assert 800 < f.evidence["variance_ratio"] < 1600
    assert f.prescription == {"init": "glorot_uniform"}
    m = dg.finding("mean_shift")
    _check_finding(m)
    assert m.prescription["activation"] == "tanh"


@pytest.mark.parametrize("init", ["zeros", "constant"])
def test_symmetric_init_is_an_infinite_mismatch_and_its_cure_verified(init):
    """Every weight of a layer equal (variance 0): the units start identical and stay so, the
    loss stays at chance; the doctor said nothing (the ratio 0 was skipped)."""
    dg = doctor(dict(sizes=[20, 32, 32, 4], activation="tanh", init=init), (X, Y), lr=0.1,
                verify=True)
    f = dg.finding("init_mismatch")
    assert f is not None and f.severity == "high" and f.layers == [1, 2]
    assert f.evidence["variance_ratio"] == 0 and f.evidence["metric"] == np.inf
    assert "variance 0" in f.message and f.prescription == {"init": "glorot_uniform"}
    v = next(v for v in dg.verifications if v.kind == "init_mismatch")
    assert v.before["train_acc"] < 0.4 < 0.9 < v.after["train_acc"]  # chance (4 classes) -> fit
    assert v.helped and v.resolved


def test_divergence_gets_lr_prescription_verified():
    dg = doctor(dict(sizes=[20, 32, 32, 32, 4], activation="relu", init="he_normal"),
                (X, Y), lr=3.0, verify=True)
    f = dg.finding("divergence")
    assert f is not None and f.severity == "high"
    assert f.prescription == {"lr": pytest.approx(0.3)}
    assert dg.baseline["diverged"]
    v = next(v for v in dg.verifications if v.kind == "divergence")
    assert v.before["diverged"] and not v.after["diverged"]
    assert np.isfinite(v.after["train_loss"]) and v.helped and v.resolved
    assert v.metric == RULES["divergence"].metric
    d = json.loads(json.dumps(dg.to_dict()))  # NaN/inf become null
    assert d["baseline"]["train_loss"] is None


def test_verified_findings_ranked_by_help_and_failures_said_plainly():
    """tanh at lr 2: the smaller learning rate helped (val acc 0.72 -> 0.96) and leads; batch
    norm for the saturation did not help and comes last, marked 'did not help'."""
    dg = doctor(dict(sizes=[64, 128, 128, 10], activation="tanh", init="glorot_uniform"),
                digits(), lr=2.0, optimizer_kwargs={"momentum": 0.9}, verify=True)
    assert dg.kinds == ["lr_too_high", "divergence", "saturation"]
    helped = {v.kind: v.helped for v in dg.verifications}
    assert helped == {"lr_too_high": True, "divergence": True, "saturation": False}
    assert [v.kind for v in dg.verifications] == dg.kinds
    lead = dg.verifications[0]
    assert lead.gain[0] > 0.15 and lead.after["val_acc"] > 0.9
    text = str(dg)
    assert text.count("did not help") == 1 and "NOT" not in text
    assert text.index("did not help") > text.rindex(": helped")


def test_ranking_puts_the_largest_gain_first():
    def ver(kind, helped, acc_before, acc_after):
        return Verification(kind, {"x": 1}, {"val_acc": acc_before, "train_loss": 1.0},
                            {"val_acc": acc_after, "train_loss": 0.5}, "m", 1.0, 0.5, helped,
                            helped)

    fs = [Finding(k, [], {}, "m.") for k in ("a", "b", "c", "d")]
    vs = [ver("a", False, 0.5, 0.4), ver("b", True, 0.5, 0.6), ver("d", True, 0.5, 0.9)]
    assert [f.kind for f in rank_findings(fs, vs)] == ["d", "b", "c", "a"]


def test_verify_reports_before_after_and_helped_for_each_finding():
    # sigmoid with N(0, 1) weights, 20 layers: saturated and stuck at a constant's loss (was
    # 3 layers on 10X, 93% saturated but val acc 0.994: no harm, no finding since SATURATION_FIT)
    dg = doctor(dict(sizes=[64] + [32] * 20 + [10], activation="sigmoid", init="normal"),
                digits(), lr=0.1, verify=True)
    with_rx = [f for f in dg.findings if f.prescription]
    assert with_rx and len(dg.verifications) == len(with_rx)
    for v in dg.verifications:
        assert isinstance(v.helped, bool) and isinstance(v.resolved, bool)
        for side in (v.before, v.after):
            assert {"train_loss", "val_acc", "diverged"} <= set(side)
        assert np.isfinite(v.metric_before)
        assert v.before == dg.baseline
    text = str(dg)
    assert text.count("verified:") == len(dg.verifications)
    assert text.count("did not help") == sum(not v.helped for v in dg.verifications)


def test_network_input_is_not_modified_and_dataset_like_data_is_accepted():
    net = mlp([20, 16, 16, 4], activation="tanh", init="glorot_uniform", seed=0)
    before = [p.value.copy() for p in net.parameters()]
    data = SimpleNamespace(x_train=X[:600], y_train=Y[:600], x_val=X[600:], y_val=Y[600:],
                           n_classes=4)
    dg = doctor(net, data, lr=0.05, steps=50)
    for p, v in zip(net.parameters(), before):
        np.testing.assert_array_equal(p.value, v)
    assert dg.config["sizes"] == [20, 16, 16, 4]
    assert dg.baseline["steps"] == 50


def test_bad_input():
    with pytest.raises(TypeError, match="data must be"):
        doctor(dict(sizes=[20, 8, 4]), X)
    with pytest.raises(ValueError, match="expects"):
        doctor(dict(sizes=[5, 8, 4]), (X, Y))
    with pytest.raises(TypeError, match="net_or_config"):
        doctor("mlp", (X, Y))
    with pytest.raises(ValueError, match="steps"):
        doctor(dict(sizes=[20, 8, 4]), (X, Y), steps=0)


def test_optimizer_kwargs_are_used_and_reported():
    cfg = dict(sizes=[20, 16, 16, 4], activation="tanh", init="glorot_uniform", seed=0)
    plain = doctor(cfg, (X, Y), steps=40, lr=0.01)
    heavy = doctor(cfg, (X, Y), steps=40, lr=0.01, optimizer_kwargs={"momentum": 0.9})
    assert heavy.settings["optimizer_kwargs"] == {"momentum": 0.9}
    assert heavy.baseline["train_loss"] != plain.baseline["train_loss"]
    assert "momentum 0.9" in str(heavy)
