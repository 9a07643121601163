"""Round 16 (bridge, dlt.predict's activations): expected numbers are torch's own outputs on
the same inputs, or a direct measurement on the torch model."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
tb = pytest.importorskip("depthlab.bridge.torch_bridge")
import depthlab as dl  # noqa: E402


def test_an_uncalibrated_population_batchnorm_stays_population_and_refuses_eval_in_torch():
    """A network with bn_inference='population' not yet calibrated became a plain
    BatchNorm1d: torch's eval mode silently normalized with the running averages (depthlab
    refuses to), and from_torch gave back inference='ema'. Now the layer stays a population
    batch norm, refuses eval until calibrated, and comes back as inference='population'; once
    calibrated in depthlab, the same torch eval outputs as depthlab."""
    net = dl.mlp([4, 5, 2], batchnorm=True, bn_inference="population", dtype="float64")
    x = np.random.default_rng(0).normal(size=(8, 4))
    net.forward(x, training=True)
    t = tb.to_torch(net)
    assert isinstance(t[1], tb.PopulationBatchNorm1d)
    t.eval()
    with pytest.raises(RuntimeError, match="inference='population' needs whole-training-set") as e:
        t(torch.from_numpy(x))
    assert "\n" not in str(e.value)
    back = tb.from_torch(t)
    assert back.batchnorms()[0].inference == "population"
    assert back.batchnorms()[0].population_mean is None
    t.train()
    y_t = t(torch.from_numpy(x)).detach().numpy()  # training mode is unaffected
    np.testing.assert_allclose(y_t, back.forward(x, training=True), rtol=1e-13, atol=1e-14)
    net.calibrate(x)
    t2 = tb.to_torch(net).eval()
    np.testing.assert_allclose(t2(torch.from_numpy(x)).detach().numpy(),
                               net.forward(x, training=False), rtol=1e-13, atol=1e-14)
    back2 = tb.from_torch(t2)
    np.testing.assert_array_equal(back2.batchnorms()[0].population_var,
                                  net.batchnorms()[0].population_var)


@pytest.mark.parametrize("act", [nn.Softshrink(), nn.Hardshrink()],
                         ids=lambda m: type(m).__name__)
def test_predict_names_an_activation_it_has_no_theory_for_as_an_activation(act):
    """Threshold, RReLU, Softshrink and Hardshrink between two Linear layers were refused as
    'pooling or another operation in between' only: the message now says the module is an
    activation dlt.predict has no theory for and lists those it models. (Threshold and RReLU
    are modelled since round 20: test_predict_models_threshold_and_rrelu.)"""
    import depthlab.torch as dlt

    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(8, 16), act, nn.Linear(16, 4))
    with pytest.raises(ValueError) as e:
        dlt.predict(m, torch.randn(32, 8))
    msg = str(e.value)
    assert "\n" not in msg
    # (Softshrink/Hardshrink: measured by dlt.probe since round 19, predict says why it cannot)
    assert f"'1' ({type(act).__name__})" in msg
    assert "is an activation predict() has no theory for" in msg
    assert "modelled: " in msg and "GELU" in msg and "Softplus" in msg


@pytest.mark.parametrize("act", [nn.Threshold(0.0, 0.0), nn.RReLU()],
                         ids=lambda m: type(m).__name__)
def test_predict_models_threshold_and_rrelu(act):
    """Round 20: Threshold (of the ReLU family at threshold 0) and RReLU (its mean slope) are
    predicted, within the spread the theory has for ReLU-like chains at this width."""
    import depthlab.torch as dlt

    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(64, 256), act, nn.Linear(256, 256), type(act)(
        *((0.0, 0.0) if isinstance(act, nn.Threshold) else ())), nn.Linear(256, 10)).eval()
    x, y = torch.randn(512, 64), torch.randint(0, 10, (512,))
    t = dlt.predict(m, x, y, nn.CrossEntropyLoss())
    g = t[(t.quantity == "grad_pre_std") & (t.layer == 1)]
    ratio = float(g["value"].iloc[0] / g["predicted"].iloc[0])
    assert 0.8 < ratio < 1.25, ratio


def test_a_partly_frozen_model_is_refused_naming_the_frozen_parameter():
    """A model whose first Linear was frozen (requires_grad=False, fine-tuning) was taken as
    fully trainable: one SGD step in depthlab moved the frozen weights that torch keeps. Now a
    mix of frozen and trainable parameters is one TypeError naming the first frozen one; a
    model frozen as a whole (put away for inference) still converts, outputs equal."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2), nn.BatchNorm1d(2)).double()
    m[0].requires_grad_(False)
    with pytest.raises(TypeError, match=r"frozen parameters: '0\.weight' and 1 more has "
                                        r"requires_grad=False") as e:
        tb.from_torch(m)
    assert "\n" not in str(e.value)
    m.requires_grad_(False)
    net = tb.from_torch(m)
    x = torch.randn(6, 3, dtype=torch.float64)
    np.testing.assert_allclose(net.forward(x.numpy(), training=False),
                               m.eval()(x).numpy(), rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("make", [
    lambda: nn.GELU(approximate="tanh"), lambda: nn.Softplus(beta=3.0),
    lambda: nn.Softplus(beta=0.5, threshold=2.0), lambda: nn.LeakyReLU(0.2),
    lambda: nn.ELU(2.0), lambda: nn.CELU(0.5), lambda: nn.Hardtanh(-0.5, 2.0), nn.ReLU6,
    nn.Hardswish, nn.Hardsigmoid, nn.Mish, nn.SiLU, lambda: nn.PReLU(init=0.3)],
    ids=["gelu_tanh", "softplus3", "softplus0.5_thr2", "leaky0.2", "elu2", "celu0.5",
         "hardtanh", "relu6", "hardswish", "hardsigmoid", "mish", "silu", "prelu0.3"])
def test_predict_maps_each_torch_activation_to_its_own_function(make):
    """dlt.predict's act_std and the next layer's pre_std for one wide layer against the values
    measured on the torch model: each activation module is integrated with its own
    parameters (a Softplus(beta) taken as beta = 1, an ELU(alpha) as alpha = 1 or a PReLU as
    ReLU would be 10-100% off); act_std within 2%. No bug found here in round 16."""
    import depthlab.torch as dlt

    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(32, 512), make(), nn.Linear(512, 8)).double()
    x = 1.5 * torch.randn(1024, 32, dtype=torch.float64)
    y = torch.randint(0, 8, (1024,))
    df = dlt.predict(m, x, y, nn.CrossEntropyLoss())
    rows = df[df.quantity.isin(["act_std", "pre_std"])].dropna()
    assert len(rows) == 3
    # the activation's own output, over 512 units: tight; the 8 output units: their spread
    np.testing.assert_allclose(rows.predicted[:2], rows.value[:2], rtol=0.02)
    np.testing.assert_allclose(rows.predicted[2:], rows.value[2:], rtol=0.1)


def test_a_calibrated_network_set_to_ema_keeps_its_population_statistics_through_torch():
    """net.calibrate(x) then net.set_bn_inference('ema'): to_torch dropped the population
    statistics (a plain BatchNorm1d), so the network from_torch gave back could not go back to
    'population' ('needs whole-training-set statistics') and saved without them. Now the torch
    layer keeps them with inference='ema' (eval mode uses the running averages, as depthlab)
    and from_torch gives both back."""
    net = dl.mlp([4, 5, 2], batchnorm=True, dtype="float64")
    x = np.random.default_rng(0).normal(size=(8, 4))
    for _ in range(3):
        net.forward(x, training=True)
    net.calibrate(1.5 * x + 0.3)
    net.set_bn_inference("ema")
    t = tb.to_torch(net).eval()
    assert "inference='ema'" in repr(t[1])
    np.testing.assert_allclose(t(torch.from_numpy(x)).detach().numpy(),
                               net.forward(x, training=False), rtol=1e-13, atol=1e-14)
    back = tb.from_torch(t)
    bn = back.batchnorms()[0]
    assert bn.inference == "ema"
    np.testing.assert_array_equal(bn.population_mean, net.batchnorms()[0].population_mean)
    back.set_bn_inference("population")
    net.set_bn_inference("population")
    np.testing.assert_allclose(back.forward(x, training=False), net.forward(x, training=False),
                               rtol=1e-13, atol=1e-14)


def test_the_torch_doctor_reads_a_tanh_gelu_as_the_tanh_approximation():
    """dlt.doctor's rules and its config took nn.GELU(approximate='tanh') for exact GELU
    (activation_kwargs {}): its activation function computed erf GELU (1.954500 at s = 2
    where the module gives 1.954598; up to 4.7e-4 apart on [-4, 4]). Now the kwargs say
    approximate='tanh' and the function is the module's to float64 rounding."""
    import importlib

    dd = importlib.import_module("depthlab.torch.doctor")
    from depthlab.torch import prescriptions as rx

    m = nn.GELU(approximate="tanh")
    assert rx.activation_kwargs(m) == {"approximate": "tanh"}
    assert rx.activation_kwargs(nn.GELU()) == {}
    s = np.linspace(-4, 4, 81)
    fn = dd._activation_fn(m)
    want = m(torch.from_numpy(s)).numpy()
    np.testing.assert_allclose(fn.forward(s), want, rtol=1e-14, atol=1e-15)
    exact = nn.GELU()(torch.from_numpy(s)).numpy()
    assert np.abs(exact - want).max() > 1e-4  # the two differ: the test can tell them apart
