"""torchhunt38: dlt.probe / dlt.predict on models and inputs the earlier rounds had not seen."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import depthlab.torch as dlt  # noqa: E402


def _frozen_mlp() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 16), nn.ReLU(),
                          nn.Linear(16, 3)).double()
    return model.requires_grad_(False)


def test_a_frozen_model_given_an_x_that_requires_grad_has_its_gradient_rows():
    """model.requires_grad_(False) with x.requires_grad_() (input gradients, adversarial
    examples): the loss requires grad, but no backward ran (it ran only for trainable
    parameters), so the table had no grad_pre_* rows at all and said nothing."""
    model = _frozen_mlp()
    x = torch.randn(32, 8, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 3, (32,))
    df = dlt.probe(model, x, y, nn.CrossEntropyLoss())
    outs = []

    def keep(module, args, out):
        out.retain_grad()
        outs.append(out)

    hooks = [model[i].register_forward_hook(keep) for i in (0, 2, 4)]
    nn.CrossEntropyLoss()(model(x), y).backward()
    for h in hooks:
        h.remove()
    for layer, out in enumerate(outs, start=1):
        got = df[(df.layer == layer) & (df.quantity == "grad_pre_std")].value
        assert len(got) == 1 and np.isclose(got.iloc[0], out.grad.std(unbiased=False).item(),
                                            rtol=1e-9)
    assert "weight_grad_std" not in set(df.quantity)  # no parameter has a gradient
    x.grad = None
    dlt.probe(model, x, y, nn.CrossEntropyLoss())
    assert x.grad is None  # the caller's x left as found
    pred = dlt.predict(model, x, y, nn.CrossEntropyLoss())
    g = pred[pred.quantity == "grad_pre_std"]
    assert g.value.notna().all() and ((g.value / g.predicted).between(0.7, 1.4)).all()


def test_warnings_of_the_probe_point_at_the_callers_line():
    """They pointed at depthlab/validators.py (the keyword-hint wrapper) for a direct call."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 3))
    x, y = torch.randn(4, 8), torch.randint(0, 3, (4,))
    with pytest.warns(RuntimeWarning, match="loss does not require grad") as got:
        dlt.probe(model, x, y, lambda o, t: nn.functional.cross_entropy(o, t).detach())
    assert got[0].filename == __file__
