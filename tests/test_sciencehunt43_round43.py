"""sciencehunt43 (round 43): the prediction on a data set's own input lengths, and its speed."""

from __future__ import annotations

import numpy as np
import pytest

import depthlab as dl
import depthlab.theory.predict as predict_mod
import depthlab.theory.variance as variance_mod
from depthlab.theory import predict_gradients
from depthlab.theory.gaussian import activation_rule, resolve_activation
from depthlab.theory.predict import average_over_lengths, input_length_rule
from depthlab.theory.variance import _moments_uniform_bias, propagate


def _lognormal_table(n: int = 600, d: int = 20, seed: int = 0) -> np.ndarray:
    """A standardized table of log-normal columns (prices, counts): heavy-tailed row lengths,
    nothing like the chi-square of Gaussian features."""
    x = np.exp(np.random.default_rng(seed).normal(0.0, 1.5, (n, d)))
    return (x - x.mean(0)) / x.std(0)


def _relative_gradients(net, x: np.ndarray) -> np.ndarray:
    y = np.random.default_rng(1).integers(0, net.n_outputs, x.shape[0])
    df = dl.probe(net, x, y, loss="cross_entropy")
    g = df[(df.quantity == "grad_pre_std") & (df.layer >= 1)].sort_values("layer")["value"]
    g = g.to_numpy()
    return g / g[-1]


def test_the_prediction_takes_the_data_sets_own_input_lengths():
    # a standardized log-normal table (20 columns): the chi-square law (Gaussian features) put
    # the first layer's gradient of a tanh net under He's variance 1.7x off the measurement
    # (median of 3 seeds); the rows' own lengths put it within 10%
    x = _lognormal_table()
    sizes = [20] + [128] * 10 + [10]
    chi = predict_gradients(dl.mlp(sizes, "tanh", "he_normal"))
    own = predict_gradients(dl.mlp(sizes, "tanh", "he_normal"), x=x)
    measured = np.median([_relative_gradients(dl.mlp(sizes, "tanh", "he_normal", seed=s,
                                                     dtype="float64"), x)[0]
                          for s in range(3)])
    assert abs(np.log(measured / own.relative_std[0])) < 0.1, (measured, own.relative_std[0])
    assert abs(np.log(measured / chi.relative_std[0])) > 0.3, (measured, chi.relative_std[0])
    assert "input lengths from the 600 rows of x" in own.note


def test_the_data_average_is_the_recursion_averaged_over_every_example():
    # interpolated from 48 runs against every example's own propagate (2-D spirals, whose
    # shortest rows, nearly linear under He's variance, lead a deep tanh net's gradients: 48
    # equal-count bins of the lengths were 19% off at 20 layers)
    x = np.asarray(dl.data.load_dataset("spirals", seed=0, standardize=True).x_train[:150])
    sizes = [2] + [64] * 10
    pred = predict_gradients(dl.mlp(sizes + [2], "tanh", "he_normal"), x=x)
    r = np.sum(x * x, 1) / 2
    t, counts = np.unique(r, return_counts=True)
    frames = [propagate(sizes, "tanh", "he_normal", input_var=float(ti)) for ti in t]
    ref = average_over_lengths(frames, counts / counts.sum(), t)
    for col in ("pre_var", "grad_pre_var", "weight_grad_var", "act_var"):
        np.testing.assert_allclose(pred.frame[col], ref[col], rtol=1e-3, err_msg=col)


def test_the_length_average_runs_the_recursion_once_per_layer(monkeypatch):
    # gelu under He, 50 layers of 256: 15 propagate tables (the one length, a two-point screen,
    # 12 nodes) took 4x the time of the prediction itself; now every node runs in one pass,
    # with the same numbers as averaging the tables (rounding)
    calls = []
    real = predict_mod.propagate

    def counting(*args, **kw):
        calls.append(1)
        return real(*args, **kw)

    monkeypatch.setattr(predict_mod, "propagate", counting)
    sizes = [64] + [256] * 50 + [10]
    pred = predict_gradients(dl.mlp(sizes, "gelu", "he_normal"))
    assert len(calls) == 1
    t, w = input_length_rule(64, 1.0)
    ref = average_over_lengths([real(sizes[:-1], "gelu", "he_normal", input_var=float(ti))
                                for ti in t], w, t)
    for col in ("pre_var", "act_mean", "act_sq", "deriv_sq", "grad_pre_var",
                "weight_grad_var", "grad_pre_log_var"):
        np.testing.assert_allclose(pred.frame[col], ref[col], rtol=1e-12, atol=1e-14,
                                   err_msg=col)


def _uniform_bias_loop(fn, qw: float, bvar: float) -> np.ndarray:
    """The moments E_b E_z[.] one b at a time, as the recursion computed them before."""
    a = np.sqrt(3.0 * bvar)
    x, w = np.polynomial.legendre.leggauss(24)
    bs = np.concatenate([-a / 2 * (1 + x), a / 2 * (1 + x)])
    bw = np.concatenate([w, w]) / 4.0
    out = np.zeros(3)
    for b, wb in zip(bs, bw):
        s, ws = activation_rule(fn, qw, float(b))
        f, d = fn.f(s), fn.df(s)
        out += wb * np.array([ws @ f, ws @ (f * f), ws @ (d * d)])
    return out


@pytest.mark.parametrize("act", ["gelu", "relu", "tanh", "relu6"])
def test_uniform_bias_moments_build_their_rules_at_once(monkeypatch, act):
    # a uniform bias's 48 shifted rules were built one Python call each: a gelu net of 8
    # layers of 64 with uniform biases took 16 s once averaged over the input lengths
    fn = resolve_activation(act)
    ref = _uniform_bias_loop(fn, 0.7, 0.4)
    calls = []
    real = variance_mod.activation_rule
    monkeypatch.setattr(variance_mod, "activation_rule",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    got = np.array(_moments_uniform_bias(fn, 0.7, 0.4))
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-15)
    # relu6's kink at 6 needs its own panel edge per rule: built one by one, as before
    assert len(calls) == (48 if act == "relu6" else 0)


def test_inputs_x_are_checked():
    net = dl.mlp([8, 32, 32, 10], "tanh", "he_normal")
    with pytest.raises(ValueError, match=r"shape \(n >= 1, 8\).*got shape \(5, 7\)"):
        predict_gradients(net, x=np.ones((5, 7)))
    bad = np.ones((4, 8))
    bad[2, 3] = np.nan
    with pytest.raises(ValueError, match=r"x\[2, 3\] = nan"):
        predict_gradients(net, x=bad)
    with pytest.raises(ValueError, match="not both"):
        predict_gradients(net, x=np.ones((4, 8)), input_var=2.0)
    with pytest.raises(TypeError, match="array of input rows"):
        predict_gradients(net, x="digits")
    zero = predict_gradients(net, x=np.zeros((3, 8)))  # every length 0: the linear regime
    assert zero.covered and zero.frame["pre_var"].iloc[0] == 0.0


def test_the_standard_rules_edges_are_linspaces_to_the_bit():
    # _standard_breaks builds its evenly spaced edges without np.linspace's overhead (a rule
    # per node and layer of the length average); the edges, so every rule, are unchanged
    from depthlab.theory.gaussian import _standard_breaks

    for scale in np.concatenate([np.geomspace(1e-6, 1e9, 301), [0.0, 1.0, 3.2, 32.0]]):
        b = _standard_breaks(float(scale))
        z_near = float(b[0] + min(10.0, 16.0 / scale) if scale > 0 else 10.0)
        step = 0.5 / scale if scale > 1.0 else 0.5
        n_near = max(1, int(np.ceil(z_near / step)))
        np.testing.assert_array_equal(b[:n_near + 1], np.linspace(0.0, z_near, n_near + 1))


def test_a_mean_shift_prescription_names_the_networks_own_activation():
    # a softplus net (mean activation 0.92, unbounded) was told "a sigmoid's mean output near
    # 0.5 ... drives the top layer into saturation"
    data = dl.data.load_dataset("digits", seed=0, standardize=True)
    net = dl.mlp([64] + [64] * 10 + [10], activation="softplus", init="glorot_uniform", seed=0)
    d = dl.doctor(net, data, steps=150, lr=0.05)
    shift = [f for f in d.findings if f.kind == "mean_shift"]
    assert shift, [f.kind for f in d.findings]
    text = shift[0].prescription_text
    assert "softplus layers' mean output (0.92)" in text, text
    assert "sigmoid" not in text and "saturation" not in text, text


def test_a_residual_prediction_takes_the_data_sets_own_input_lengths():
    # 10 tanh blocks under He's variance on a standardized log-normal table: the recursion at
    # the mean length put the first layer's gradient 1.75x below the measurement (3 seeds);
    # averaged over the rows' own lengths 0.97-1.02x
    x = _lognormal_table()
    spec = dict(sizes=[20] + [128] * 11 + [10], activation="tanh", init="he_normal",
                residual=True)
    one = predict_gradients(spec)
    own = predict_gradients(spec, x=x)
    measured = np.median([_relative_gradients(dl.mlp(**spec, seed=s, dtype="float64"), x)[0]
                          for s in range(3)])
    assert abs(np.log(measured / own.relative_std[0])) < 0.1, (measured, own.relative_std[0])
    assert abs(np.log(measured / one.relative_std[0])) > 0.4, (measured, one.relative_std[0])
    assert "averaged over the input lengths of the 600 rows of x" in own.note


def test_the_exploding_through_time_kind_is_known_to_a_diagnosis_without_it():
    # tdochunt43's request: d.finding("exploding_through_time") on a diagnosis without it was
    # a ValueError (an unknown kind), where vanishing_through_time read None
    torch = pytest.importorskip("torch")
    import depthlab.torch as dlt

    x, y = torch.randn(40, 5), torch.randint(0, 3, (40,))
    d = dlt.doctor(lambda: torch.nn.Linear(5, 3), (x, y), steps=5, verify=False)
    assert d.finding("exploding_through_time") is None


def test_the_shared_dead_unit_rule_prescribes_what_the_torch_doctor_verifies(monkeypatch):
    # tdochunt43's request (their measurement): an 8-wide ReLU MLP on digits at SGD lr 1, 60
    # steps, layer 1 0% dead at initialization and 50% at the end, lr_too_high found. The
    # shared rule judged it 'biases' (0 -> 4 of 8 units is 1.6 standard errors, not 'died')
    # and prescribed He's init; lr / 10 helped (val acc 0.15 -> 0.27, dead 0.5 -> 0.25), He's
    # init did not (dead 0.5 -> 0.875)
    import sys

    torch = pytest.importorskip("torch")
    import depthlab.torch as dlt
    from depthlab.data import load_dataset

    doctor = sys.modules["depthlab.torch.doctor"]
    seen = {}
    orig = doctor._cures

    def spy(f, base, *a, **k):
        if f.kind == "dead_relu":
            seen["rule"] = dict(f.prescription)
        return orig(f, base, *a, **k)

    monkeypatch.setattr(doctor, "_cures", spy)
    nn = torch.nn

    def make():
        return nn.Sequential(nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(),
                             nn.Linear(8, 10))

    d = dlt.doctor(make, load_dataset("digits", seed=0), steps=60, verify=False,
                   optimizer=("sgd", {"lr": 1.0}))
    f = d.finding("dead_relu")
    assert f.evidence["dead_frac_worst_init"] == 0.0 and "lr_too_high" in d.kinds
    assert seen["rule"] == f.prescription == {"lr": 0.1}, (seen, f.prescription)


def test_a_large_data_sets_lengths_are_binned_beyond_max_distinct(monkeypatch):
    # 60,000 rows kept 60,000 x layers arrays per column; beyond MAX_DISTINCT lengths the rule
    # takes equal-count bins, the shortest and longest rows each their own
    import depthlab.theory.lengths as lengths_mod

    x = _lognormal_table(n=3000)
    net = dl.mlp([20] + [128] * 10 + [10], "tanh", "he_normal")
    full = predict_gradients(net, x=x)
    monkeypatch.setattr(lengths_mod, "MAX_DISTINCT", 256)
    t, w, m = lengths_mod.empirical_length_rule(np.sum(x * x, 1) / 20)
    assert t.size == 256 and abs(w @ t - 1.0) < 1e-12
    r = np.sum(x * x, 1) / 20
    assert t[0] == r.min() / m and t[-1] == r.max() / m
    binned = predict_gradients(net, x=x)
    for col in ("pre_var", "grad_pre_var"):
        np.testing.assert_allclose(binned.frame[col], full.frame[col], rtol=1e-3, err_msg=col)
