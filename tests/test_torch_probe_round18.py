"""depthlab.torch probe and predict on models the earlier rounds did not cover (round 18).
Measured values are compared with a direct computation by plain torch operations and autograd
in float64 (population std, ddof = 0); predictions with the measurement at initialization."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import depthlab.torch as dlt  # noqa: E402

CE = nn.CrossEntropyLoss()
D = torch.float64


def _pstd(v: torch.Tensor) -> float:
    return float(v.detach().double().std(unbiased=False))


def _mean(v: torch.Tensor) -> float:
    return float(v.detach().double().mean())


class _AlphaBlock(nn.Module):
    """``x.add(fc2(relu(fc1(x))), alpha=alpha)``: a residual add that scales its branch."""

    def __init__(self, width: int, alpha: float, fn: str = "method") -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width)
        self.alpha, self.fn = alpha, fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch = self.fc2(self.act(self.fc1(x)))
        if self.fn == "method":
            return x.add(branch, alpha=self.alpha)
        return torch.add(x, branch, alpha=self.alpha)


@pytest.mark.parametrize("alpha,fn", [(0.5, "method"), (2.0, "function")])
def test_predict_refuses_a_residual_add_with_alpha(alpha, fn):
    """``x.add(F(x), alpha=0.5)`` is ``x + 0.5 F(x)``: the branch's gradient is scaled by
    alpha, which predict() took for a plain sum (grad_pre_std of the layer before the block
    predicted 2.0x the measurement for alpha 0.5, 0.5x for alpha 2)."""
    torch.manual_seed(0)
    w = 64
    model = nn.Sequential(nn.Linear(w, w), nn.ReLU(), _AlphaBlock(w, alpha, fn),
                          nn.Linear(w, 10)).to(D)
    x, y = torch.randn(128, w, dtype=D), torch.randint(0, 10, (128,))
    with pytest.raises(ValueError, match=rf"'2'.*alpha={alpha:g}"):
        dlt.predict(model, x, y, CE)
    plain = nn.Sequential(nn.Linear(w, w), nn.ReLU(), _AlphaBlock(w, 1.0, fn),
                          nn.Linear(w, 10)).to(D)
    df = dlt.predict(plain, x, y, CE)  # alpha 1 is the plain sum: predicted as before
    g = df[df.quantity == "grad_pre_std"]
    assert ((g.predicted / g.value).between(0.8, 1.25)).all()


@pytest.mark.parametrize("on", [3, 2])
def test_predict_refuses_a_deprecated_backward_hook(on):
    """``module.register_backward_hook`` (the deprecated kind) acts on the autograd node of the
    module's output, invisible in the forward: a hook returning ``grad_input * 10`` on a tanh
    had grad_pre_std of the layers below predicted 0.1x the measurement, silently."""
    torch.manual_seed(0)
    w = 64
    model = nn.Sequential(nn.Linear(32, w), nn.Tanh(), nn.Linear(w, w), nn.Tanh(),
                          nn.Linear(w, 10)).to(D)
    x, y = torch.randn(128, 32, dtype=D), torch.randint(0, 10, (128,))
    handle = model[on].register_backward_hook(lambda m, gi, go: (gi[0] * 10,))
    kind = type(model[on]).__name__
    with pytest.raises(ValueError, match=rf"backward hook \(register_backward_hook\) on "
                                         rf"'{on}' \({kind}\)"):
        dlt.predict(model, x, y, CE)
    handle.remove()
    df = dlt.predict(model, x, y, CE)  # without it: predicted as measured
    g = df[df.quantity == "grad_pre_std"]
    assert ((g.predicted / g.value).between(0.8, 1.25)).all()


def test_predict_takes_a_dropout_of_p_one(recwarn):
    """``nn.Dropout(1.0)`` in training mode zeroes every entry: predict() raised
    ZeroDivisionError (after NumPy's divide-by-zero warnings). Now the layer after it reads
    zeros (its pre_std is its biases' spread, exactly) and no gradient reaches the layer
    before it (0, as measured)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Dropout(1.0), nn.Linear(32, 64),
                          nn.Tanh(), nn.Linear(64, 4)).to(D)
    x, y = torch.randn(64, 16, dtype=D), torch.randint(0, 4, (64,))
    df = dlt.predict(model, x, y, CE).set_index(["layer", "quantity"])
    assert df.loc[(1, "grad_pre_std"), "predicted"] == 0.0 == df.loc[(1, "grad_pre_std"), "value"]
    bias = model[3].bias.detach()
    assert df.loc[(2, "pre_std"), "predicted"] == pytest.approx(_pstd(bias), rel=1e-9)
    assert df.loc[(2, "pre_std"), "value"] == pytest.approx(_pstd(bias), rel=1e-9)
    assert df.loc[(2, "act_std"), "predicted"] == pytest.approx(_pstd(torch.tanh(bias)), rel=1e-3)
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


class _BufferOnly(nn.Module):
    """A linear map whose weights were kept with ``register_buffer``."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("w", torch.randn(6, 3))
        self.register_buffer("scale", torch.ones(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.w * self.scale


def test_a_model_with_buffers_only_is_told_its_weights_are_buffers():
    """A model whose 2-dim weights are buffers (register_buffer) got 'has no weight layers
    (modules owning a real floating-point parameter ...)', which did not say why its weight
    was none; now the line names the buffer and its shape."""
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    for call in (lambda: dlt.probe(_BufferOnly(), x, y, CE), lambda: dlt.predict(_BufferOnly(), x),
                 lambda: dlt.discover(_BufferOnly(), x)):
        with pytest.raises(ValueError, match=r"^model _BufferOnly has no weight layers: its "
                                             r"tensor 'w' \(shape \(6, 3\)\) is a buffer "
                                             r"\(register_buffer\), not a parameter") as e:
            call()
        assert "\n" not in str(e.value)


def _patched(which: str) -> nn.Sequential:
    import functools
    import types

    import torch.nn.functional as F

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(),
                          nn.Linear(64, 10)).to(D)
    if which == "layer":
        model[2].forward = types.MethodType(
            lambda self, x: 3 * F.linear(x, self.weight, self.bias), model[2])
    elif which == "activation":
        model[1].forward = types.MethodType(lambda self, x: torch.tanh(3 * x), model[1])
    elif which == "wrapper":  # calls the class's own forward (accelerate's device hooks)
        old = model[2].forward
        model[2].forward = functools.update_wrapper(
            functools.partial(lambda m, *a, **k: old(*a, **k), model[2]), old)
    return model


@pytest.mark.parametrize("which,name", [("layer", r"layer '2' \(Linear\)"),
                                        ("activation", r"activation '1' \(Tanh\)")])
def test_predict_refuses_a_forward_replaced_on_the_instance(which, name):
    """``layer.forward = types.MethodType(f, layer)`` (a patch on the instance, not a subclass)
    was predicted as the class computes it: a Linear returning ``3 * F.linear(...)`` gave the
    next layer's pre_std 0.33x the measurement, a Tanh patched to ``tanh(3 x)`` act_std 0.6x,
    silently. A wrapper that calls the class's own forward is still predicted."""
    x, y = torch.randn(128, 32, dtype=D), torch.randint(0, 10, (128,))
    with pytest.raises(ValueError, match=rf"{name} has its forward\(\) replaced on the "
                                         r"instance"):
        dlt.predict(_patched(which), x, y, CE)
    df = dlt.predict(_patched("wrapper"), x, y, CE)
    assert ((df.predicted / df.value).between(0.8, 1.25)).all()


def test_probe_does_not_count_a_patched_activation_by_its_class_derivative():
    """A Tanh whose forward was replaced on the instance (it computes a ReLU) was counted by
    tanh's derivative: saturated_frac 0.18 for an activation that never saturates. Such a
    module is no recognised activation now: no act_* or fraction rows (as any custom module),
    the layer's own rows unchanged."""
    import types

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 2)).to(D)
    x, y = 3 * torch.randn(32, 8, dtype=D), torch.randint(0, 2, (32,))
    plain = dlt.probe(model, x, y, CE, percentiles=())
    model[1].forward = types.MethodType(lambda self, s: torch.relu(s), model[1])
    df = dlt.probe(model, x, y, CE, percentiles=())
    got = df[df.layer == 1].set_index("quantity").value
    assert not any(q.startswith("act_") or q.endswith("_frac") for q in got.index)
    assert got["pre_std"] == plain[(plain.layer == 1) & (plain.quantity == "pre_std")].value.item()
    s = model[0](x)
    assert got["pre_std"] == pytest.approx(_pstd(s), rel=1e-9)
    assert dlt.activation_spec(model[1]) is None and dlt.activation_spec(nn.Tanh()) is not None
