"""Every reproduction's claims can fail: each experiment run (through its own stage functions,
at the smallest settings it offers) with a deliberately wrong setting — a swapped init, the
wrong activation, SELU's constants exchanged, a step of 1e-5, batch norm left out — and the
claims that rest on that setting must stop holding, while the right setting at the same small
size keeps them. Also: the papers' setups and constants (papers.md), and ``depthlab
reproduce``'s ``--strict``, ``--json`` and its errors.

``tests/test_reproduce.py`` pins every claim of the quick runs; these tests show that those
verdicts are measured, not given.
"""

from __future__ import annotations

import functools
import json
import math

import numpy as np
import pandas as pd
import pytest
from helpers.cli import assert_one_line_error, run_cli
from threadpoolctl import threadpool_limits

import depthlab as dl
import depthlab.activations as activations
from depthlab.data import Dataset, load_dataset
from depthlab.layers import BatchNorm
from depthlab.progress import ExperimentProgress
from depthlab.reproduce import (
    depth_ladder,
    glorot2010,
    he2015,
    ioffe2015,
    klambauer2017,
    saxe2013,
    schoenholz2017,
    xu2016,
    yang2019,
)
from depthlab.reproduce.base import REGISTRY, Claim, Experiment, Result

MLP = dl.mlp


@pytest.fixture(autouse=True)
def _one_thread():
    with threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", seed=0, standardize=True)


def verdicts(res: Result) -> dict[str, bool]:
    """Claim text (up to its first colon or 40 characters) -> holds."""
    return {c.claim[:40]: bool(c.holds) for c in res.claims}


def claim(res: Result, prefix: str) -> Claim:
    (c,) = [c for c in res.claims if c.claim.startswith(prefix)]
    return c


def patch_mlp(monkeypatch, **replace) -> None:
    """``dl.mlp`` with some keyword arguments replaced: ``init={"he_normal": "glorot_uniform"}``
    swaps one init for another, ``activation="tanh"`` forces one, ``batchnorm=False`` too."""

    def mlp(sizes, *args, **kw):
        for key, value in replace.items():
            if isinstance(value, dict):
                kw[key] = value.get(kw.get(key), kw.get(key))
            else:
                kw[key] = value
        return MLP(sizes, *args, **kw)

    monkeypatch.setattr(dl, "mlp", mlp)


def planned(labels) -> ExperimentProgress:
    return ExperimentProgress.planned(list(labels))


# -- glorot2010 ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shapes():
    return glorot2010.shapeset_split(2000, 10, 300, seed=0)


GLOROT_SMALL = dict(fig2_width=64, fig2_steps=300, fig2_every=100, fig2_lr=0.1, init_width=200,
                    jacobian_examples=1)


def _glorot_at_init(shapes) -> Result:
    res = Result("glorot2010", "t")
    d = glorot2010.Inputs(shapes, None, GLOROT_SMALL, planned([glorot2010.INIT_LABEL]))
    glorot2010.stage_at_init(d, res)
    return res


def test_glorot_standard_init_claims_fail_when_the_standard_init_is_the_normalized_one(
        shapes, monkeypatch):
    right = _glorot_at_init(shapes)
    assert claim(right, "tanh at init, standard init: activation").holds
    assert claim(right, "tanh at init, standard init: back-propagated").holds
    assert claim(right, "mean singular value").holds
    patch_mlp(monkeypatch, init={"fan_in_uniform": "glorot_uniform"})
    wrong = _glorot_at_init(shapes)
    for prefix in ("tanh at init, standard init: activation",
                   "tanh at init, standard init: back-propagated", "mean singular value"):
        c = claim(wrong, prefix)
        assert not c.holds, (prefix, c.measured)
    assert claim(wrong, "tanh at init, standard init: activation").value > 0.5


def test_glorot_fig2_saturation_claim_fails_for_a_net_that_never_was_at_one_half(
        shapes, monkeypatch):
    """A tanh net's top layer sits at ~0 from step 0: 'falls below 0.1' must not hold (it did
    before the start condition), and 'lower layers stay above 0.4' fails too."""
    patch_mlp(monkeypatch, activation="tanh")
    res = Result("glorot2010", "t")
    glorot2010.stage_fig2(glorot2010.Inputs(shapes, None, GLOROT_SMALL,
                                            planned([glorot2010.FIG2_LABEL])), res)
    top, lower = res.claims
    assert not top.holds and "mean 0.00 at step 0" in top.measured
    assert not lower.holds and lower.value < 0.1


# -- ioffe2015 ----------------------------------------------------------------------------------
def test_ioffe_claims_fail_when_nothing_trains(monkeypatch):
    """At lr 1e-5 neither net learns or moves: 'BN trains faster' and the drift claim (whose
    ratio of two near-zero drifts still passed before the floor) do not hold."""
    monkeypatch.setattr(ioffe2015, "_settings", lambda quick: dict(steps=300, evals=6))
    right = ioffe2015.run(quick=True)
    assert claim(right, "BN reaches").holds
    assert claim(right, "percentiles of last-layer").holds
    monkeypatch.setattr(ioffe2015, "LR", 1e-5)
    wrong = ioffe2015.run(quick=True)
    assert not claim(wrong, "BN reaches").holds
    drift = claim(wrong, "percentiles of last-layer")
    assert not drift.holds and drift.value > ioffe2015.DRIFT_FACTOR  # the ratio alone passes
    assert any("drift claim does not hold" in n for n in wrong.notes)


# -- he2015 -------------------------------------------------------------------------------------
HE_SMALL = dict(width=64, steps=20, probe_every=10, n_probe=128, train_ratio=0.05, seeds=(1,))


def test_he_gradient_and_training_claims_fail_with_xavier_in_place_of_he(monkeypatch):
    monkeypatch.setattr(he2015, "_settings", lambda quick: dict(HE_SMALL))
    right = he2015.run(quick=True)
    grad = claim(right, "first-layer mean")
    assert grad.holds and 1 / 3 <= grad.value <= 3
    patch_mlp(monkeypatch, init={"he_normal": "glorot_uniform"})
    wrong = he2015.run(quick=True)
    grad = claim(wrong, "first-layer mean")
    assert not grad.holds and grad.value < 1e-3  # the ratio is ~1, not 2^(29/2)
    trains = claim(wrong, "30-layer ReLU net, He init")
    assert not trains.holds and trains.value > 0.9


# -- klambauer2017 ------------------------------------------------------------------------------
def _klambauer(monkeypatch) -> Result:
    monkeypatch.setattr(klambauer2017, "_settings",
                        lambda quick: dict(depths=(2,), width=16, steps=20))
    monkeypatch.setattr(klambauer2017, "forward_moments",
                        functools.partial(klambauer2017.forward_moments, width=256, n=300))
    return klambauer2017.run(quick=True)


FIXED_POINT = ("standard input", "input with mean 1", "the SELU moment map")


def test_selu_fixed_point_claims_fail_with_lambda_and_alpha_swapped(monkeypatch):
    right = _klambauer(monkeypatch)
    for prefix in FIXED_POINT:
        c = claim(right, prefix)
        assert c.holds and c.value is not None, (prefix, c.measured)
    assert claim(right, "standard input").value <= 0 and claim(right, "the SELU").value <= 1
    monkeypatch.setattr(activations, "SELU_LAMBDA", activations.SELU_ALPHA)
    monkeypatch.setattr(activations, "SELU_ALPHA", 1.0507009873554804934193349852946)
    wrong = _klambauer(monkeypatch)
    for prefix in FIXED_POINT:
        c = claim(wrong, prefix)
        assert not c.holds, (prefix, c.measured)
    assert claim(wrong, "standard input").value > 0 and claim(wrong, "the SELU").value > 1


def test_selu_fixed_point_claims_fail_with_he_init(monkeypatch):
    patch_mlp(monkeypatch, init={"lecun_normal": "he_normal"})
    wrong = _klambauer(monkeypatch)
    assert not claim(wrong, "standard input").holds
    assert not claim(wrong, "input with mean 1").holds


def test_domain_margin():
    inside = pd.DataFrame({"mean": [0.05, -0.02], "var": [1.0, 1.2]})
    assert klambauer2017.domain_margin(inside) == pytest.approx(-0.05)
    outside = pd.DataFrame({"mean": [0.0, 0.3], "var": [1.0, 2.0]})
    assert klambauer2017.domain_margin(outside) == pytest.approx(0.5)


# -- xu2016 -------------------------------------------------------------------------------------
def _xu_gradients(digits) -> Result:
    res = Result("xu2016", "t")
    d = xu2016.Inputs(width=64, seeds=[0], ds=digits, dname="digits", train_width=32,
                      train_steps=200, train_seeds=[3],
                      progress=planned(xu2016.gradient_label(c["label"])
                                       for c in xu2016._configs()))
    xu2016.stage_gradient_ratios(d, res)
    return res


def test_xu_gradient_claims_fail_when_the_sigmoid_net_is_a_tanh_net(digits, monkeypatch):
    right = _xu_gradients(digits)
    assert all(c.holds for c in right.claims), [c.measured for c in right.claims]
    configs = xu2016._configs()
    for c in configs:
        if c["label"] == "sigmoid":
            c["act"] = "tanh"  # the net is tanh, the theory still the sigmoid's
    monkeypatch.setattr(xu2016, "_configs", lambda: configs)
    wrong = _xu_gradients(digits)
    for prefix in ("same init: per layer", "10-layer sigmoid net", "theory (variance"):
        assert not claim(wrong, prefix).holds, prefix
    assert claim(wrong, "same init: per layer").value == pytest.approx(1.0, abs=0.01)


def test_xu_training_claim_fails_when_the_rescaled_sigmoid_is_the_sigmoid(digits, monkeypatch):
    def table(configs):
        res = Result("xu2016", "t")
        monkeypatch.setattr(xu2016, "_train_configs", lambda: configs)
        d = xu2016.Inputs(width=32, seeds=[0], ds=digits, dname="digits", train_width=32,
                          train_steps=200, train_seeds=[3],
                          progress=planned(xu2016.training_label(c["label"], 3)
                                           for c in configs))
        xu2016.stage_training(d, res)
        return claim(res, "the same 20-layer net trains with the rescaled")

    configs = xu2016._train_configs()
    right = table(configs)
    assert right.holds and right.value >= 0.9
    wrong = table([dict(c, act="sigmoid") if c["label"].startswith("rescaled") else c
                   for c in configs])
    assert not wrong.holds and wrong.value < 0.2


# -- saxe2013 -----------------------------------------------------------------------------------
def test_saxe_product_claims_fail_with_the_inits_swapped():
    """The 'scaled Gaussian' factors drawn orthogonal and the 'orthogonal' ones Gaussian: the
    heavy tail, the crushed bulk and the exploding condition number are not seen (the run is
    shared with test_report_round18.py)."""
    from helpers.background import saxe_inits_exchanged

    wrong = saxe_inits_exchanged()
    for prefix in ("...but the bulk is crushed", "heavy tail", "Gaussian: condition number"):
        c = claim(wrong, prefix)
        assert not c.holds, (prefix, c.measured)
    assert not wrong.checks[0].holds  # the orthogonal identity check fails too


# -- schoenholz2017 -----------------------------------------------------------------------------
def _schoenholz_inputs(ds, labels) -> schoenholz2017.Inputs:
    return schoenholz2017.Inputs(True, ds, "digits", sw2_grid=[1.0, 1.76, 4.0], depths=[12, 48],
                                 steps=20, width=8, gwidth=64, gseeds=[0],
                                 progress=planned(labels))


def test_schoenholz_transition_claim_fails_at_another_bias_variance(digits, monkeypatch):
    right = Result("s", "t")
    schoenholz2017.stage_transition(
        _schoenholz_inputs(digits, [schoenholz2017.TRANSITION_LABEL]), right)
    assert right.claims[0].holds and abs(right.claims[0].value - 1.76) < 0.01
    monkeypatch.setattr(schoenholz2017, "SIGMA_B2", 0.3)
    wrong = Result("s", "t")
    schoenholz2017.stage_transition(
        _schoenholz_inputs(digits, [schoenholz2017.TRANSITION_LABEL]), wrong)
    assert not wrong.claims[0].holds and wrong.claims[0].value > 1.9


def _growth(ds) -> Result:
    res = Result("s", "t")
    labels = [schoenholz2017.gradient_label(s) for s in schoenholz2017.gradient_grid(True)]
    schoenholz2017.stage_gradient_growth(_schoenholz_inputs(ds, labels), res)
    return res


def test_schoenholz_growth_claims_fail_when_every_net_is_critical(digits, monkeypatch):
    right = _growth(digits)
    assert all(c.holds for c in right.claims), [c.measured for c in right.claims]
    crit = schoenholz2017.critical_sigma_w2("tanh", schoenholz2017.SIGMA_B2)
    tanh_net = schoenholz2017.tanh_net
    monkeypatch.setattr(schoenholz2017, "tanh_net",
                        lambda sizes, sw2, sb2, seed, dtype="float32":
                        tanh_net(sizes, crit, sb2, seed, dtype))
    wrong = _growth(digits)
    assert not claim(wrong, "chaotic phase").holds
    assert not claim(wrong, "measured ratio within").holds


@pytest.fixture()
def six_xi_c_at_the_ends(monkeypatch):
    """schoenholz2017's trainability figure with its 6 ξ_c curve computed at the two ends of
    its σ_w² range only: the full curve is 200 correlation-map fixed points (~20 s of CPU, 85%
    of the trainability test below); the tests that use this read the claims, the table and
    the axes' labels, not the curve (test_reproduce.py's quick run draws the full one)."""
    from depthlab.theory import meanfield

    def at_the_ends(lo: float, hi: float, sigma_b2: float):
        sw = np.array([lo, hi])
        six_xi = np.array([6 * meanfield("tanh", v, sigma_b2).xi_c for v in sw])
        return sw, np.where(np.isfinite(six_xi), six_xi, 1e6)

    monkeypatch.setattr(schoenholz2017, "_six_xi_c", at_the_ends)


@pytest.mark.usefixtures("six_xi_c_at_the_ends")
def test_schoenholz_trainability_claims_fail_when_nothing_trains(digits, monkeypatch):
    small = Dataset("digits-small", digits.x_train[:256], digits.y_train[:256],
                            digits.x_val, digits.y_val, digits.x_test, digits.y_test, 10)
    monkeypatch.setattr(schoenholz2017, "LR", 1e-6)
    res = Result("s", "t")
    labels = [schoenholz2017.train_label(s, L) for s in (1.0, 1.76, 4.0) for L in (12, 48)]
    schoenholz2017.stage_trainability(_schoenholz_inputs(small, labels), res)
    assert res.tables["grid"]["train_acc"].max() < 0.5
    for prefix in ("trained (train acc", "the 6 ξ_c rule beats", "depth 48: the near-critical"):
        assert not claim(res, prefix).holds, prefix


# -- yang2019 -----------------------------------------------------------------------------------
def _yang_growth(ds) -> Result:
    kw = dict(depths=[10, 30], widths=[32, 128], seeds=[0], batch_width=32, ds=ds,
              dname="digits", steps=30, train_width=16)
    res = Result("yang2019", "t")
    d = yang2019.Inputs(**kw, progress=planned(
        [yang2019.growth_label(w, kw["depths"]) for w in kw["widths"]]
        + [yang2019.batch_label(b) for b in yang2019.BATCHES]))
    yang2019.stage_growth(d, res)
    yang2019.stage_batch(d, res)
    return res


def test_yang_growth_claim_fails_without_batch_norm(digits, monkeypatch):
    right = _yang_growth(digits)
    c = claim(right, "per-layer growth")
    assert c.holds and c.value <= yang2019.GROWTH_TOL
    patch_mlp(monkeypatch, batchnorm=False)
    wrong = _yang_growth(digits)
    c = claim(wrong, "per-layer growth")
    assert not c.holds and c.value > 0.1  # ReLU + He without BN: growth ~1, not 1.21
    assert wrong.tables["growth"]["growth"].between(0.9, 1.1).all()


# -- depth ladder -------------------------------------------------------------------------------
def test_depth_ladder_claims_fail_with_the_recipes_exchanged(digits, monkeypatch):
    """The 'good' recipes given the naive sigmoid + N(0, 1) and the naive ones ReLU + He."""
    naive = dict(activation="sigmoid", init="normal")
    good = dict(activation="relu", init="he_normal")
    recipes = {k: (naive if k in depth_ladder.GOOD else good if k in depth_ladder.NAIVE
                   else v) for k, v in depth_ladder.RECIPES.items()}
    monkeypatch.setattr(depth_ladder, "RECIPES", recipes)
    monkeypatch.setattr(depth_ladder, "train_accuracy",
                        functools.partial(_short_training, steps=100))
    res = depth_ladder.run(quick=True)
    good = claim(res, "good activation + init recipes")
    assert not good.holds and good.value < 10, good.measured
    # ReLU + He in the naive rows trains deeper than the sigmoid now in the good rows
    assert claim(res, "naive sigmoid").value > good.value


def _short_training(net, ds, steps_asked, seed, lr=0.01, progress=None, *, steps):
    from depthlab.reproduce.base import train_accuracy

    return train_accuracy(net, ds, steps, seed, lr=lr, progress=progress)


# -- setups and constants (papers.md) -----------------------------------------------------------
def test_setups_and_constants_match_the_papers():
    assert activations.SELU_LAMBDA == 1.0507009873554804934193349852946
    assert activations.SELU_ALPHA == 1.6732632423543772848170429916717
    gen = np.random.default_rng(0)
    n_in, n_out = 400, 100
    std = dl.get_initializer("fan_in_uniform")((n_in, n_out), gen, "float64")
    assert np.abs(std).max() <= 1 / math.sqrt(n_in) < np.abs(std).max() * 1.01
    norm = dl.get_initializer("glorot_uniform")((n_in, n_out), gen, "float64")
    lim = math.sqrt(6) / math.sqrt(n_in + n_out)
    assert np.abs(norm).max() <= lim < np.abs(norm).max() * 1.01
    lecun = dl.get_initializer("lecun_normal")((n_in, 2000), gen, "float64")
    assert lecun.mean() == pytest.approx(0, abs=3e-3) and lecun.var() * n_in == pytest.approx(
        1.0, rel=0.02)
    he = dl.get_initializer("he_normal")((n_in, 2000), gen, "float64")
    assert he.var() * n_in == pytest.approx(2.0, rel=0.02)
    assert BatchNorm(3).momentum == 0.01  # PyTorch form: weight of the new batch
    # Ioffe & Szegedy: 3 x 100 sigmoid, batch 60; He: 30 ReLU layers; Schoenholz: tanh,
    # sigma_b^2 = 0.05, critical 1.76; Yang: sqrt(pi / (pi - 1)) ~ 1.21 per layer
    assert ioffe2015.HIDDEN == (100, 100, 100) and ioffe2015.BATCH == 60
    assert he2015.DEPTH == 30 and he2015.INITS == ("glorot_uniform", "he_normal")
    assert schoenholz2017.SIGMA_B2 == 0.05
    assert dl.theory.critical_sigma_w2("tanh", sigma_b2=0.05) == pytest.approx(1.76, abs=0.01)
    assert yang2019.PREDICTED == pytest.approx(1.2112, abs=1e-4)
    assert saxe2013.INITS["scaled Gaussian N(0, 1/n)"] == "lecun_normal"
    assert [c[2] for c in glorot2010.TABLE_CONFIGS] == [
        "fan_in_uniform", "glorot_uniform", "fan_in_uniform", "glorot_uniform", "fan_in_uniform"]


def test_mean_field_numbers_match_papers_md():
    """papers.md [computed]: tanh, sigma_b^2 = 0.05: xi_c ~ 3.6 / 15.8 / 25 / 9 at sigma_w^2 =
    1, 1.5, 2, 3; q* ~ 0.57 at the critical 1.76; chi1^49 = 1.4e-6, 0.99, 1.1e4 at 1, 1.76, 3."""
    from depthlab.theory import meanfield

    for sw2, xi in ((1.0, 3.6), (1.5, 15.8), (2.0, 25.0), (3.0, 9.0)):
        assert meanfield("tanh", sw2, 0.05).xi_c == pytest.approx(xi, rel=0.02), sw2
    crit = dl.theory.critical_sigma_w2("tanh", sigma_b2=0.05)
    assert meanfield("tanh", crit, 0.05).q_star == pytest.approx(0.57, abs=0.005)
    for sw2, growth in ((1.0, 1.4e-6), (1.76, 0.99), (3.0, 1.1e4)):
        assert meanfield("tanh", sw2, 0.05).chi1 ** 49 == pytest.approx(growth, rel=0.05), sw2


def test_schoenholz_net_weights_and_biases_have_the_set_variances():
    net = schoenholz2017.tanh_net([500, 500, 10], 1.76, 0.05, seed=0, dtype="float64")
    dense = net.probe_points()[0].dense
    assert dense.W.value.var() * 500 == pytest.approx(1.76, rel=0.02)
    b = np.concatenate([p.dense.b.value for p in net.probe_points()])
    assert b.var() == pytest.approx(0.05, rel=0.2)


# -- the command line ---------------------------------------------------------------------------
def _fake(holds: bool, value: float):
    def run(quick=False, data=None, progress=False):
        return Result("fake", "A fake experiment",
                      claims=[Claim("a claim", "paper", "measured", holds, value=value)])
    return run


@pytest.mark.parametrize("holds, strict, code", [(True, True, 0), (False, True, 1),
                                                 (False, False, 0)])
def test_strict_exits_1_only_when_a_claim_does_not_hold(tmp_path, monkeypatch, capsys,
                                                       holds, strict, code):
    monkeypatch.setitem(REGISTRY, "fake", Experiment("fake", "A fake experiment", "Nobody",
                                                     _fake(holds, 0.5)))
    args = ["reproduce", "fake", "--out", tmp_path / "f", "-q"] + (["--strict"] if strict else [])
    got, _, _ = run_cli(capsys, *args)
    assert got == code
    rows = json.loads((tmp_path / "f" / "claims.json").read_text())
    assert rows == [{"claim": "a claim", "paper": "paper", "measured": "measured",
                     "holds": holds, "value": 0.5, "computed": ""}]


def test_json_is_strict_json_alone_on_stdout(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(REGISTRY, "fake", Experiment("fake", "A fake experiment", "Nobody",
                                                     _fake(False, float("nan"))))
    code, out, err = run_cli(capsys, "reproduce", "fake", "--out", tmp_path / "f", "--json",
                             "--strict")
    assert code == 1

    def refuse(name):
        raise ValueError(f"not strict JSON: {name}")

    payload = json.loads(out, parse_constant=refuse)
    assert payload[0]["claims"][0]["value"] is None and payload[0]["all_hold"] is False
    assert "did not hold" in err
    json.loads((tmp_path / "f" / "claims.json").read_text(), parse_constant=refuse)


@pytest.mark.parametrize("args, fragments", [
    (["reproduce", "no-such-experiment"], ("no-such-experiment", "glorot2010", "'all'")),
    (["reproduce", "he2015", "--no-such-option"], ("--no-such-option",)),
    (["reproduce", "ioffe2015", "--quick", "--data", "cifar10", "-q"], ("cifar10", "mnist5k")),
])
def test_bad_names_and_options_are_one_line_and_exit_2(capsys, args, fragments):
    code, out, err = run_cli(capsys, *args)
    assert out == ""
    assert_one_line_error(code, err, *fragments)


# -- figures ------------------------------------------------------------------------------------
@pytest.mark.usefixtures("six_xi_c_at_the_ends")
def test_grid_figures_label_the_values_they_were_measured_at():
    sw2, depths = [1.0, 1.76, 4.0], [12, 48]
    grid = pd.DataFrame([dict(sigma_w2=s, depth=d, train_acc=0.1 * k)
                         for k, (s, d) in enumerate((s, d) for s in sw2 for d in depths)])
    ax = schoenholz2017._fig_grid(grid, sw2, depths, 800).axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["12", "48"]  # not 6×10⁰, 10¹
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "1.76", "4"]
    assert sorted(t.get_text() for t in ax.texts) == sorted(f"{0.1 * k:.2f}" for k in range(6))
    growth = yang2019.growth_table([10, 30], [16], [0])
    batch = pd.concat([yang2019.growth_table([10], [16], [0], batch=b) for b in (8, 32)])
    a1, a2 = yang2019._fig_growth(growth, batch).axes
    assert [t.get_text() for t in a1.get_xticklabels()] == ["10", "30"]
    assert [t.get_text() for t in a2.get_xticklabels()] == ["8", "32"]
    assert all(ax.get_xlabel() and ax.get_ylabel() for ax in (a1, a2))
