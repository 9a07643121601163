"""Round 38 (nphunt38): regressions found by a demanding user of the NumPy side."""

from __future__ import annotations

import numpy as np
import pytest

import depthlab as dl


def _pair(n: int = 40) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 5)), rng.integers(0, 3, n)


def test_doctor_names_the_callers_row_of_a_nan_in_a_bare_pair() -> None:
    # the seeded 80/20 split renumbered the rows: "validation x ... (first at row 5, column 1)"
    x, y = _pair()
    x[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"^x contains NaN or infinity \(first at row 2, "
                                         r"column 1\)"):
        dl.doctor(dl.mlp([5, 4, 3], seed=0), (x, y), steps=5)


def test_doctor_names_the_callers_row_of_an_infinite_target() -> None:
    x, _ = _pair()
    y = np.random.default_rng(1).normal(size=40)
    y[0] = np.inf
    with pytest.raises(ValueError, match=r"^y contains NaN or infinity \(first at row 0\)"):
        dl.doctor(dl.mlp([5, 4, 1], seed=0), (x, y), loss="mse", steps=5)


def test_doctor_data_of_three_items_says_how_many() -> None:
    x, y = _pair()
    with pytest.raises(TypeError, match="got tuple of 3 items"):
        dl.doctor(dl.mlp([5, 4, 3], seed=0), (x, y, x), steps=5)


@pytest.mark.parametrize("mode", ["fan_in", "fan_out", "fan_avg"])
def test_truncated_normal_variance_scaling_keeps_the_variance_and_the_cut(mode: str) -> None:
    # Keras' rule: N(0, s^2) cut at +-2 s, s = sqrt(scale / fan) / 0.87962566 (was refused:
    # "unknown distribution 'truncated_normal'")
    init = dl.initializers.get_initializer("variance_scaling", scale=2.0, mode=mode,
                                           distribution="truncated_normal")
    w = init((400, 300), 0, dtype="float64")
    var = init.variance(400, 300)
    fan = {"fan_in": 400, "fan_out": 300, "fan_avg": 350}[mode]
    assert var == pytest.approx(2.0 / fan)
    assert w.var() / var == pytest.approx(1.0, abs=0.02)  # 1.2e5 draws: sampling error ~0.5%
    cut = 2.0 * np.sqrt(var) / 0.87962566103423978
    assert init.limit(400, 300) == pytest.approx(cut)
    assert np.abs(w).max() <= cut
    assert np.abs(w).max() > 0.99 * cut  # cut, not shrunk
    w32 = init((400, 300), 0)
    assert w32.dtype == np.float32 and np.abs(w32).max() <= cut


def test_calculate_gain_is_torchs() -> None:
    torch = pytest.importorskip("torch")
    from depthlab.activations import get_activation
    from depthlab.initializers import calculate_gain

    assert calculate_gain("identity") == 1.0  # depthlab's name of linear
    for name in ("linear", "sigmoid", "conv2d", "tanh", "relu", "selu", "leaky_relu"):
        assert calculate_gain(name) == pytest.approx(torch.nn.init.calculate_gain(name), rel=1e-15)
    assert calculate_gain("leaky_relu", 0.2) == pytest.approx(
        torch.nn.init.calculate_gain("leaky_relu", 0.2), rel=1e-15)
    act = get_activation("leaky_relu", negative_slope=0.3)
    assert calculate_gain(act) == pytest.approx(torch.nn.init.calculate_gain("leaky_relu", 0.3))
    with pytest.raises(ValueError, match="no gain for nonlinearity 'gelu'; accepted: linear"):
        calculate_gain("gelu")


def _torch_losses():  # type: ignore[no-untyped-def]
    torch = pytest.importorskip("torch")
    fn = torch.nn.functional
    rng = np.random.default_rng(3)
    return torch, [
        ("mse", {}, rng.normal(size=(5, 4)), lambda a, b, r: fn.mse_loss(a, b, reduction=r)),
        ("huber", {"delta": 0.7}, rng.normal(size=(5, 4)),
         lambda a, b, r: fn.huber_loss(a, b, reduction=r, delta=0.7)),
        ("binary_cross_entropy", {}, rng.random((5, 4)),
         lambda a, b, r: fn.binary_cross_entropy_with_logits(a, b, reduction=r)),
        ("cross_entropy", {"label_smoothing": 0.1}, rng.integers(0, 4, 5),
         lambda a, b, r: fn.cross_entropy(a, b, reduction=r, label_smoothing=0.1)),
        ("cross_entropy", {}, rng.dirichlet(np.ones(4), 5),
         lambda a, b, r: fn.cross_entropy(a, b, reduction=r)),
    ]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_loss_reductions_match_torch(reduction: str) -> None:
    # reduction= was "unknown argument 'reduction'" (torch's losses all take it)
    torch, cases = _torch_losses()
    rng = np.random.default_rng(4)
    z = rng.normal(size=(5, 4)) * 3
    for name, kw, y, torch_fn in cases:
        loss = dl.loss(name, reduction=reduction, **kw)
        value = loss.forward(z, y)
        zt = torch.tensor(z, requires_grad=True)
        ref = torch_fn(zt, torch.tensor(y), reduction)
        if reduction == "none":
            up = rng.normal(size=np.shape(value))
            grad = loss.backward(up)
            (ref * torch.tensor(up)).sum().backward()
        else:
            assert isinstance(value, float)
            grad = loss.backward()
            ref.backward()
        np.testing.assert_allclose(value, ref.detach().numpy(), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(grad, zt.grad.numpy(), rtol=1e-12, atol=1e-16)


def test_loss_reduction_refusals_are_one_line() -> None:
    x, y = _pair()
    with pytest.raises(ValueError, match=r"reduction='avg' is not accepted; accepted: 'mean', "
                                         r"'sum', 'none'"):
        dl.loss("mse", reduction="avg")
    with pytest.raises(ValueError, match="training follows one number per batch"):
        dl.fit(dl.mlp([5, 3], seed=0), x, y, loss_kwargs={"reduction": "none"})
    with pytest.raises(ValueError, match="the doctor compares mean losses"):
        dl.doctor(dl.mlp([5, 3], seed=0), (x, y), loss=dl.loss("cross_entropy",
                                                               reduction="sum"), steps=5)
    hist = dl.fit(dl.mlp([5, 3], seed=0), x, y, loss_kwargs={"reduction": "sum"}, epochs=1,
                  batch_size="full")
    mean = dl.loss("cross_entropy").forward(dl.mlp([5, 3], seed=0).forward(x), y)
    assert hist.step_loss[0] == pytest.approx(40 * mean, rel=1e-6)


def test_network_infers_n_inputs_from_its_first_width_fixing_layer() -> None:
    # as torch's nn.Sequential: Network(layers) was "missing 1 required keyword-only argument:
    # 'n_inputs'" though its first Dense says it
    from depthlab import layers as L

    x, y = _pair()
    net = dl.Network([L.Dense(5, 8), L.Activation("tanh"), L.Dense(8, 3)])
    assert net.n_inputs == 5
    assert dl.Network([L.Activation("tanh"), L.BatchNorm(5), L.Dense(5, 3)]).n_inputs == 5
    res = dl.Network([L.Residual([L.Dense(5, 5), L.Activation("relu")]), L.Dense(5, 3)])
    assert res.n_inputs == 5
    with pytest.raises(ValueError, match=r"expects 7 features, the layers before it give 8"):
        dl.Network([L.Dense(5, 8), L.Dense(7, 3)])
    with pytest.raises(TypeError, match=r"needs n_inputs= \(the input features\)"):
        dl.Network([L.Activation("tanh")])
    assert dl.Network([L.Activation("tanh")], n_inputs=4).n_inputs == 4
    hand = dl.Network([L.Dense(5, 8), L.Activation("relu"),
                       L.Residual([L.Dense(8, 8), L.Activation("relu"), L.Dense(8, 8)]),
                       L.Dense(8, 3)])
    header = str(dl.doctor(hand, (x, y), steps=5)).splitlines()[0]
    # was "depthlab doctor: network ?, init as built"
    assert header == "depthlab doctor: 5-8-8-8-3 relu (4 layers built by hand), init as built"


@pytest.mark.filterwarnings("error")
def test_cross_entropy_of_logits_float64_cannot_separate_is_inf_without_a_warning() -> None:
    # z - max(z) overflowed to -inf with NumPy's "RuntimeWarning: overflow encountered in
    # subtract"; the loss is inf and the gradient (softmax - onehot) / B, as torch's
    loss = dl.loss("cross_entropy")
    value = loss.forward(np.array([[1e308, -1e308], [3.0, -1e308]]), np.array([1, 0]))
    assert value == np.inf
    np.testing.assert_array_equal(loss.backward(), [[0.5, -0.5], [0.0, 0.0]])


@pytest.mark.parametrize("name", ["he_normal", "he_uniform"])
def test_he_takes_torchs_negative_slope(name: str) -> None:
    # torch's kaiming_*_(a=0.2) gives Var 2 / ((1 + a^2) fan); he_* took no slope ("unknown
    # argument 'negative_slope'")
    from depthlab.initializers import calculate_gain, get_initializer

    for mode, fan in (("fan_in", 400), ("fan_out", 300)):
        init = get_initializer(name, mode=mode, negative_slope=0.2)
        assert init.variance(400, 300) == pytest.approx(
            calculate_gain("leaky_relu", 0.2) ** 2 / fan, rel=1e-14)
        w = init((400, 300), 0, dtype="float64")
        assert w.var() / init.variance(400, 300) == pytest.approx(1.0, abs=0.02)
    assert get_initializer(name).variance(400, 300) == pytest.approx(2 / 400)


@pytest.mark.parametrize("name", ["glorot_normal", "glorot_uniform"])
def test_glorot_takes_torchs_gain(name: str) -> None:
    # torch's xavier_*_(gain=5/3) for tanh: Var 2 g^2 / (fan_in + fan_out) (was "unknown argument
    # 'gain'")
    from depthlab.initializers import calculate_gain, get_initializer

    g = calculate_gain("tanh")
    init = get_initializer(name, gain=g)
    assert init.variance(400, 300) == pytest.approx(2 * g * g / 700, rel=1e-14)
    w = init((400, 300), 0, dtype="float64")
    assert w.var() / init.variance(400, 300) == pytest.approx(1.0, abs=0.02)
    assert get_initializer(name).variance(400, 300) == pytest.approx(2 / 700)


def test_a_non_finite_target_is_named_by_its_row() -> None:
    # dl.probe / a loss: was "target contains non-finite values (e.g. nan)", no row
    x, _ = _pair()
    y = np.random.default_rng(2).normal(size=(40, 1))
    y[5, 0] = np.nan
    with pytest.raises(ValueError, match=r"^target contains non-finite values \(nan first at row "
                                         r"5, column 0\); accepted: finite numbers$"):
        dl.probe(dl.mlp([5, 4, 1], seed=0), x, y, loss="mse")
    with pytest.raises(ValueError, match=r"\(inf first at row 2\)"):
        dl.loss("cross_entropy").forward(np.zeros((3, 2)), np.array([0.0, 1.0, np.inf]))


def test_fit_names_reduction_as_every_losss_argument() -> None:
    # was "(reduction is an argument of the loss 'mse': ...)" for a cross_entropy run
    x, y = _pair()
    with pytest.raises(TypeError, match=r"\(reduction is an argument of every loss: "
                                        r"loss_kwargs=\{'reduction': 'sum'\}\)"):
        dl.fit(dl.mlp([5, 3], seed=0), x, y, reduction="sum")
    with pytest.raises(TypeError, match=r"\(delta is an argument of the loss 'huber'"):
        dl.fit(dl.mlp([5, 3], seed=0), x, y, delta=2.0)
