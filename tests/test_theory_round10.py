"""Round 10 of the theory checks: dlt.predict's gradient anchor and narrow layers.

* The gradient scale is anchored at the last layer's measured ``dL/ds``; the layers below
  receive ``W^T g``, which carries ``g``'s mean as well as its spread, so the anchor is
  ``E[g^2] = std^2 + mean^2`` (MSE towards targets of mean 5: every lower layer was predicted
  0.045x the measurement).
* ``pre_std``/``act_std`` are measured about the layer's own mean over its ``n`` units, which
  misses ``1/n`` of the spread of the units' random means ``W_j E_batch[a]`` (a one-unit output
  after ReLU: predicted 1.21x the measurement).
"""

from __future__ import annotations

import importlib
import math

import numpy as np
import pytest
import torch
from torch import nn

import depthlab.torch as dlt

P = importlib.import_module("depthlab.torch.predict")


def _relu_regressor(seed: int, outputs: int = 1) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(32, 256), nn.ReLU(), nn.Linear(256, outputs))


def _ratios(seeds, make, target, loss_fn) -> dict[tuple[int, str], float]:
    """sqrt(mean predicted variance / mean measured variance) per (layer, quantity)."""
    acc: dict[tuple[int, str], list[float]] = {}
    for seed in seeds:
        model = make(seed)
        gen = torch.Generator().manual_seed(100 + seed)
        x = torch.randn(128, 32, generator=gen)
        y = target(gen)
        df = dlt.predict(model, x, y, loss_fn)
        for r in df.itertuples():
            a = acc.setdefault((r.layer, r.quantity), [0.0, 0.0])
            a[0] += r.predicted ** 2
            a[1] += r.value ** 2
    return {k: math.sqrt(p / v) for k, (p, v) in acc.items() if v > 0}


def test_gradient_anchor_counts_the_mean_of_the_output_gradient():
    """Targets of mean 5, outputs near 0: dL/ds at the output is mostly its mean, which
    W^T carries down; the hidden layer's gradient std is predicted to within 10% (was 0.045x)."""
    r = _ratios(range(3), _relu_regressor,
                lambda gen: 5.0 + 0.1 * torch.randn(128, 1, generator=gen), nn.MSELoss())
    assert 0.9 <= r[(1, "grad_pre_std")] <= 1.1, r
    assert r[(2, "grad_pre_std")] == 1.0 or abs(r[(2, "grad_pre_std")] - 1.0) < 1e-9


def test_anchor_keeps_the_measured_std_at_the_last_layer():
    """The last layer's predicted grad_pre_std is the measured one (its mean is not a spread)."""
    model = _relu_regressor(0)
    x = torch.randn(64, 32)
    y = 5.0 + torch.randn(64, 1)
    df = dlt.predict(model, x, y, nn.MSELoss())
    top = df[(df.layer == 2) & (df.quantity == "grad_pre_std")].iloc[0]
    assert top.predicted == np.float64(top.value) or abs(top.predicted / top.value - 1) < 1e-9


def test_one_unit_output_pre_std_is_the_expected_measured_spread():
    """One output unit after a ReLU layer: 1/pi of q is the unit's mean over the batch, which
    a std over that unit's entries cannot see: the prediction was 1.21x the measurement."""
    r = _ratios(range(16), _relu_regressor, lambda gen: torch.randn(128, 1, generator=gen),
                nn.MSELoss())
    assert 0.92 <= r[(2, "pre_std")] <= 1.08, r
    assert 0.95 <= r[(1, "pre_std")] <= 1.05, r


def test_finite_unit_term_is_one_over_n_of_the_weights_part_only():
    """No activation, zero-mean weights, input batch means m: the term is exactly
    n_in v |m|^2 / n_out (W_j m varies over units), and biases (taken as they are) add none."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 3))
    x = torch.randn(50, 20) + torch.linspace(-2, 2, 20)  # large per-feature batch means
    x = x * (x.shape[1] ** 0.5 / x.norm(dim=1, keepdim=True))  # one length: no groups
    assert P._input_groups(x.double()) == []
    df = dlt.predict(model, x)
    w = model[0].weight.detach().double()
    b = model[0].bias.detach().double()
    x64 = x.double()
    v, mw = float(w.pow(2).mean()), float(w.mean())
    mw = importlib.import_module("depthlab.torch.propagation")._weight_mean("0", w.numel(), v, mw,
                                                                  20.0)
    q = 20 * (v - mw * mw) * float(x64.pow(2).mean()) + float(b.var(unbiased=False))
    qb = 20 * v * float(x64.var(dim=0, unbiased=False).mean())
    want = q - (20 * (v - mw * mw) * float(x64.pow(2).mean()) - qb) / 3
    got = float(df[df.quantity == "pre_std"].predicted.iloc[0]) ** 2
    assert got == np.float64(want) or abs(got / want - 1) < 1e-9


class _PreActBlock(nn.Module):
    def __init__(self, n: int, bn: bool) -> None:
        super().__init__()
        first = [nn.BatchNorm1d(n)] if bn else []
        self.f = nn.Sequential(*first, nn.ReLU(), nn.Linear(n, n), nn.ReLU(), nn.Linear(n, n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.f(x)


@pytest.mark.parametrize("bn, first", [(False, "relu"), (True, "BatchNorm1d")])
def test_pre_activation_block_is_refused_by_what_it_is(bn, first):
    """A block whose branch starts with the activation (or BN) of the layer before was
    refused as 'not the previous layer's output ... it is the output of '0' (Linear)', which
    contradicted itself; now it is named a pre-activation block."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), _PreActBlock(16, bn), nn.Linear(16, 3))
    with pytest.raises(ValueError, match=rf"residual block '1' starts with {first} on '0''s "
                                         r"output \(a pre-activation block"):
        dlt.predict(model, torch.randn(32, 8))
