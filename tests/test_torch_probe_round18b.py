"""depthlab.torch probe and predict, round 18b: findings left open by round 18. Measured values
are compared with a direct computation by plain torch operations and autograd in float64
(population std, ddof = 0); predictions with the measurement at initialization."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import depthlab.torch as dlt  # noqa: E402

CE = nn.CrossEntropyLoss()
D = torch.float64


def _pstd(v: torch.Tensor) -> float:
    return float(v.detach().double().std(unbiased=False))


def _tanh_net(w: int = 64) -> tuple[nn.Sequential, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, w), nn.Tanh(), nn.Linear(w, w), nn.Tanh(),
                          nn.Linear(w, 10)).to(D)
    return model, torch.randn(128, 32, dtype=D), torch.randint(0, 10, (128,))


def _grad_pre(model: nn.Sequential, x: torch.Tensor, y: torch.Tensor, at: int) -> float:
    """dL/ds of layer ``model[at]``'s output, by autograd (no hooks of depthlab)."""
    h = x
    for i, m in enumerate(model):
        h = m(h)
        if i == at:
            s = h
    (g,) = torch.autograd.grad(CE(h, y), s)
    return _pstd(g)


@pytest.mark.parametrize("kind", ["log", "same", "pre", "global"])
def test_predict_takes_backward_hooks_that_only_read(kind):
    """A full backward hook that only reads (a logging hook returning None, or one returning
    the gradient as given) leaves the gradient as it is; predict() refused every such model
    ("custom autograd Function 'BackwardHookFunctionBackward'")."""
    from torch.nn.modules import module as torch_module

    model, x, y = _tanh_net()
    seen: list[int] = []
    if kind == "log":
        h = model[2].register_full_backward_hook(lambda m, gi, go: seen.append(1))
    elif kind == "same":
        h = model[3].register_full_backward_hook(lambda m, gi, go: gi)
    elif kind == "pre":
        h = model[1].register_full_backward_pre_hook(lambda m, go: seen.append(1))
    else:
        h = torch_module.register_module_full_backward_hook(lambda m, gi, go: seen.append(1))
    try:
        df = dlt.predict(model, x, y, CE)
    finally:
        h.remove()
    g = df[df.quantity == "grad_pre_std"].set_index("module")
    assert g.loc["2", "value"] == pytest.approx(_grad_pre(model, x, y, 2), rel=1e-9)
    assert ((g.predicted / g.value).between(0.9, 1.1)).all()
    assert kind == "same" or seen  # the user's hook ran


@pytest.mark.parametrize("kind,who", [("full", r"full backward hook on '2' \(Linear\)"),
                                      ("pre", r"full backward pre-hook on '3' \(Tanh\)")])
def test_predict_refuses_a_backward_hook_that_changes_the_gradient(kind, who):
    """A full backward (pre-)hook returning a scaled gradient is refused by name."""
    model, x, y = _tanh_net()
    if kind == "full":
        h = model[2].register_full_backward_hook(lambda m, gi, go: (gi[0] * 10,))
    else:
        h = model[3].register_full_backward_pre_hook(lambda m, go: (go[0] * 3,))
    try:
        with pytest.raises(ValueError, match=who + " returned a changed gradient"):
            dlt.predict(model, x, y, CE)
    finally:
        h.remove()
