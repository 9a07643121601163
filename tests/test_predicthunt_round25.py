"""Round 25 (predicthunt25): dlt.predict against the measurement at initialization."""

import math

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import depthlab.torch as dlt  # noqa: E402


def _bn_mlp(depth: int, width: int, seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    layers = [nn.Linear(32, width)]
    for _ in range(depth - 1):
        layers += [nn.BatchNorm1d(width), nn.ReLU(), nn.Linear(width, width)]
    layers += [nn.BatchNorm1d(width), nn.ReLU(), nn.Linear(width, 10)]
    return nn.Sequential(*layers).double()


def _ratios(make, batch: int, seeds: int = 3) -> dict:
    pred, meas = {}, {}
    for seed in range(seeds):
        g = torch.Generator().manual_seed(100 + seed)
        x = torch.randn(batch, 32, generator=g, dtype=torch.float64)
        y = torch.randint(0, 10, (batch,), generator=g)
        df = dlt.predict(make(seed), x, y, nn.CrossEntropyLoss())
        for r in df.itertuples():
            pred.setdefault((r.layer, r.quantity), []).append(r.predicted ** 2)
            meas.setdefault((r.layer, r.quantity), []).append(r.value ** 2)
    return {k: math.sqrt(sum(pred[k]) / sum(meas[k])) for k in pred}


@pytest.mark.parametrize("batch, lo, hi", [(4, 0.6, 1.6), (8, 0.85, 1.25), (16, 0.85, 1.2)])
def test_batchnorm_with_a_small_batch_passes_the_gradient_it_does(batch, lo, hi):
    # BN's backward removes the batch mean and the direction of xhat ((B - 2) / B of the
    # gradient passes) and divides by the batch's own std, whose 1 / var has mean
    # B / ((B - 3) qb) > 1 / qb: taking 1 / (qb + eps) compounded per BN layer (7 BN layers
    # of 128, 3 seeds: layer 1's grad_pre_std 0.05x at batch 4, 0.57x at 8, 0.75x at 16);
    # at batch 4 1 / var has an infinite variance: a few seeds scatter widely
    r = _ratios(lambda s: _bn_mlp(8, 128, s), batch)
    for layer in (1, 4):
        assert lo < r[(layer, "grad_pre_std")] < hi, (layer, r[(layer, "grad_pre_std")])
