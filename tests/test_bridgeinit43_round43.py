"""Round 43 (bridgeinit43): torch's ``trunc_normal`` initializer by name, Keras'
``untruncated_normal`` distribution name, and the variances of the initializers against
torch.nn.init's draws."""

from __future__ import annotations

import math

import numpy as np
import pytest

from depthlab.initializers import get_initializer, variance_scaling, weight_variance

SHAPE = (500, 800)  # 400,000 entries per draw


def _z(w: np.ndarray, var: float) -> float:
    """(E[W^2] - var) / its standard error (from the sample's fourth moment)."""
    m2 = float(np.mean(w**2))
    se = math.sqrt(max(float(np.mean(w**4)) - m2 * m2, 1e-300) / w.size)
    return (m2 - var) / se


def _trunc_var(std: float, b: float) -> float:
    """Var of N(0, std^2) cut to [-b, b], by numerical integration (independent of the
    closed form in the module)."""
    z = np.linspace(-b / std, b / std, 200_001)
    pdf = np.exp(-0.5 * z * z)
    return std**2 * float(np.trapezoid(z * z * pdf, z) / np.trapezoid(pdf, z))


@pytest.mark.parametrize("std,b", [(1.0, 2.0), (0.02, 0.04), (0.02, 2.0), (1.0, 0.3),
                                   (0.5, 0.5e-3)])
def test_trunc_normal_variance_is_the_truncated_normals(std, b):
    init = get_initializer("trunc_normal", std=std, a=-b, b=b)
    var = _trunc_var(std, b)
    assert weight_variance("trunc_normal", 3, 4, std=std, a=-b, b=b) == pytest.approx(
        var, rel=1e-6)
    for seed in range(3):
        w = init(SHAPE, seed, "float64")
        assert np.abs(w).max() <= b
        if b / std <= 3.0:  # the bound is reached (at 100 std it never is)
            assert np.abs(w).max() > 0.99 * b
        assert abs(_z(w, var)) < 5.0
        assert abs(float(w.mean())) < 5.0 * math.sqrt(var / w.size)
    # float32: rounding does not push a draw past the bound
    w32 = init(SHAPE, 0, "float32")
    assert w32.dtype == np.float32 and float(np.abs(w32).astype(np.float64).max()) <= b


def test_trunc_normal_std_is_before_truncation_as_torchs():
    """std=1 on [-2, 2]: Var 0.774, not 1 (a corrected std) nor 0.774^2; a z-test at 400,000
    entries tells 0.774 from 0.80 by more than ten standard errors."""
    w = get_initializer("trunc_normal")(SHAPE, 11, "float64")
    assert abs(_z(w, 0.7737413035499232)) < 5.0
    assert abs(_z(w, 0.80)) > 10.0
    torch = pytest.importorskip("torch")
    t = torch.empty(SHAPE, dtype=torch.float64)
    torch.manual_seed(0)
    torch.nn.init.trunc_normal_(t)
    assert abs(_z(t.numpy(), 0.7737413035499232)) < 5.0


@pytest.mark.parametrize("kwargs,match", [
    ({"a": -3.0, "b": 2.0}, r"a = -b.*a=-3\.0, b=2\.0"),
    ({"a": 0.5, "b": 1.0}, r"a = -b"),
    ({"std": 0.0}, r"std must be a finite number > 0, got 0\.0"),
    ({"b": math.inf, "a": -math.inf}, r"must be finite"),
])
def test_trunc_normal_bad_arguments_refused_in_one_line(kwargs, match):
    with pytest.raises(ValueError, match=match) as info:
        get_initializer("trunc_normal", **kwargs)
    assert "\n" not in str(info.value)


def test_trunc_normal_names_torch_and_keras_users_type():
    assert repr(get_initializer("TruncNormal")) == "trunc_normal(std=1.0, a=-2.0, b=2.0)"
    with pytest.raises(TypeError, match="'mean'"):
        get_initializer("trunc_normal", mean=0.1)


def test_untruncated_normal_is_keras_name_of_normal():
    a = variance_scaling(2.0, "fan_out", "untruncated_normal")
    b = variance_scaling(2.0, "fan_out", "normal")
    assert a.distribution == "normal"
    np.testing.assert_array_equal(a((30, 20), 3, "float64"), b((30, 20), 3, "float64"))
    with pytest.raises(ValueError, match="unknown distribution 'gaussian'"):
        variance_scaling(distribution="gaussian")


# torch.nn.init's draws on a (fan_out, fan_in) nn.Linear weight against depthlab's variance
# for the (fan_in, fan_out) engine layout
TORCH_CASES = [
    ("xavier_uniform_", {"gain": 1.7}, "xavier_uniform", {"gain": 1.7}),
    ("xavier_normal_", {}, "xavier_normal", {}),
    ("kaiming_normal_", {"a": 0.2, "mode": "fan_out"}, "kaiming_normal",
     {"a": 0.2, "mode": "fan_out"}),
    ("kaiming_uniform_", {"a": math.sqrt(5)}, "kaiming_uniform", {"a": math.sqrt(5)}),
    ("kaiming_normal_", {"nonlinearity": "tanh", "mode": "fan_in"}, "kaiming_normal",
     {"nonlinearity": "tanh"}),
    ("kaiming_uniform_", {"nonlinearity": "selu", "mode": "fan_out"}, "kaiming_uniform",
     {"nonlinearity": "selu", "mode": "fan_out"}),
    ("orthogonal_", {"gain": 2.5}, "orthogonal", {"gain": 2.5}),
]


@pytest.mark.parametrize("tname,tkw,name,kw", TORCH_CASES, ids=[c[0] + c[2] for c in TORCH_CASES])
def test_variance_matches_torch_nn_init(tname, tkw, name, kw):
    torch = pytest.importorskip("torch")
    fan_in, fan_out = 800, 500
    t = torch.empty(fan_out, fan_in, dtype=torch.float64)
    torch.manual_seed(1)
    getattr(torch.nn.init, tname)(t, **tkw)
    var = weight_variance(name, fan_in, fan_out, **kw)
    assert abs(_z(t.numpy(), var)) < 5.0
    w = get_initializer(name, **kw)((fan_in, fan_out), 1, "float64")
    assert abs(_z(w, var)) < 5.0


# -- from_torch of a module of the user's own class whose forward is a chain -------------------


def _chain_models():
    torch = pytest.importorskip("torch")
    nn = torch.nn

    class Chain(nn.Module):  # the usual hand-written MLP
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.act, self.fc2 = nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 6)
            self.blocks = nn.ModuleList([nn.Sequential(nn.BatchNorm1d(6), nn.ELU(0.5),
                                                       nn.Linear(6, 6)) for _ in range(2)])
            self.head = nn.Linear(6, 3)

        def forward(self, x):
            x = self.fc2(self.act(self.fc1(x)))
            for block in self.blocks:
                x = block(x)
            return self.head(x)

    class Wrapper(nn.Module):  # a model holding its layers in one attribute
        def __init__(self, inner) -> None:
            super().__init__()
            self.net = inner

        def forward(self, x):
            return self.net(x)

    return torch, nn, Chain, Wrapper


@pytest.mark.parametrize("train", [False, True])
def test_from_torch_reads_a_custom_module_whose_forward_is_a_chain(train):
    # before: 'from_torch cannot express the model itself (Wrapper); accepted: ...'
    from depthlab.bridge import from_torch, to_torch

    torch, nn, Chain, Wrapper = _chain_models()
    torch.manual_seed(0)
    model = Wrapper(Chain()).double()
    x = torch.randn(16, 4, dtype=torch.float64) * 2
    with torch.no_grad():  # running statistics away from (0, 1)
        model.train()(x + 1)
    model.train(train)
    net = from_torch(model)
    # fc1, tanh, fc2, 2 x (norm, elu, linear), an identity slot (Linear feeds Linear), head
    assert [type(la).__name__[0] for la in net.layers] == list("DADBADBADAD")
    ref = model(x)
    got = net.forward(x.numpy(), training=train)
    np.testing.assert_allclose(got, ref.detach().numpy(), rtol=1e-12, atol=1e-13)
    # gradients agree too (the chain is the computation, not an approximation of it)
    g = torch.randn_like(ref)
    ref.backward(g)
    net.backward(g.numpy())
    assert np.abs(net.layers[0].W.grad - model.net.fc1.weight.grad.numpy().T).max() < 1e-12
    back = to_torch(net).train(train)
    np.testing.assert_allclose(back(x).detach().numpy(), ref.detach().numpy(), rtol=1e-12,
                               atol=1e-13)


def test_from_torch_names_the_step_of_a_custom_forward_that_is_not_a_chain():
    from depthlab.bridge import from_torch

    torch, nn, Chain, Wrapper = _chain_models()

    class Res(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            return x + self.fc(x)

    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc, self.act = nn.Linear(4, 4), nn.Tanh()

        def forward(self, x):
            return self.fc(self.act(self.fc(x)))

    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            return self.fc(x) if x.sum() > 0 else x

    class TrainOnly(nn.Module):  # dropout only in training mode: not one chain
        def __init__(self) -> None:
            super().__init__()
            self.fc, self.drop = nn.Linear(4, 4), nn.Dropout(0.5)

        def forward(self, x):
            x = self.fc(x)
            return self.drop(x) if self.training else x

    train_only = TrainOnly().eval()
    with pytest.raises(TypeError, match=r"\(TrainOnly: its forward calls other submodules in "
                                        r"training mode \(fc, drop\) than in eval mode \(fc\)"):
        from_torch(train_only)
    assert not train_only.training and not train_only.drop.training  # its modes restored

    for model, what in [
        (Res(), r"the model itself \(Res: its forward is not a chain of its submodules \(it "
                r"calls add\)\); accepted"),
        (Wrapper(Twice()), r"module 'net' \(Twice: its forward calls 'fc' twice \(shared "
                           r"weights"),
        (Branchy(), r"the model itself \(Branchy: its forward could not be traced as a chain"),
        (Wrapper(nn.Sequential(nn.Linear(4, 4), nn.PReLU())), r"module 'net\.1' \(PReLU"),
    ]:
        with pytest.raises(TypeError, match=rf"^from_torch cannot express {what}") as info:
            from_torch(model)
        assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", ["he_normal", "kaiming_uniform"])
def test_he_with_a_leaky_relu_object_reads_its_slope_as_calculate_gain_does(name):
    # before: Var 2 / fan_in (slope 0), while calculate_gain(the object)^2 = 2 / 1.09
    from depthlab.activations import get_activation
    from depthlab.initializers import calculate_gain

    act = get_activation("leaky_relu", negative_slope=0.3)
    init = get_initializer(name, nonlinearity=act)
    fan_in, fan_out = 800, 500
    var = 2.0 / (1.09 * fan_in)
    assert calculate_gain(act) ** 2 / fan_in == pytest.approx(var, rel=1e-12)
    assert init.variance(fan_in, fan_out) == pytest.approx(var, rel=1e-12)
    assert init.negative_slope == 0.3
    w = init((fan_in, fan_out), 2, "float64")
    assert abs(_z(w, var)) < 5.0 and abs(_z(w, 2.0 / fan_in)) > 10.0
    assert get_initializer(name, nonlinearity=act, a=0.3).variance(fan_in, fan_out) == \
        pytest.approx(var, rel=1e-12)
    with pytest.raises(ValueError, match=r"negative_slope=0\.1 and the slope of .* \(0\.3\) "
                                         r"name one slope"):
        get_initializer(name, nonlinearity=act, negative_slope=0.1)


def test_from_torch_reads_functional_activations_and_flatten_in_a_custom_chain():
    # before: 'cannot express the model itself (Functional)'
    from depthlab.bridge import from_torch, to_torch

    torch, nn, _, _ = _chain_models()
    F = nn.functional

    class Functional(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.fc2, self.out = nn.Linear(3, 6), nn.Linear(6, 6), nn.Linear(6, 2)

        def forward(self, x):
            x = F.relu(self.fc1(torch.flatten(x, 1)))
            x = F.leaky_relu(self.fc2(x), 0.2).tanh()
            x = F.softplus(F.elu(x, alpha=0.5), beta=2.0)
            return F.softmax(self.out(x.flatten(1)), dim=1)

    class AcrossBatch(Functional):
        def forward(self, x):
            return F.softmax(self.out(F.gelu(self.fc2(self.fc1(x)))), dim=0)

    torch.manual_seed(3)
    model = Functional().double().eval()
    x = torch.randn(8, 3, dtype=torch.float64) * 2
    net = from_torch(model)
    assert [str(la.fn) for la in net.layers if hasattr(la, "fn")] == [
        "ReLU()", "LeakyReLU(negative_slope=0.2)", "Tanh()", "ELU(alpha=0.5)",
        "Softplus(beta=2.0, threshold=20.0)", "Softmax()"]
    np.testing.assert_allclose(net.predict(x.numpy()), model(x).detach().numpy(), rtol=1e-12,
                               atol=1e-14)
    np.testing.assert_allclose(to_torch(net).eval()(x).detach().numpy(),
                               model(x).detach().numpy(), rtol=1e-12, atol=1e-14)
    with pytest.raises(TypeError, match=r"^from_torch cannot express the model itself "
                                        r"\(AcrossBatch: its forward is not a chain of its "
                                        r"submodules \(it calls softmax\)\)"):
        from_torch(AcrossBatch())
