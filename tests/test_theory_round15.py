"""Round 15: predictions of depthlab.theory and depthlab.torch.predict against measurements,
and cases where no number must be given."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

import depthlab as dl
from depthlab.theory import predict_gradients, propagate_residual


def _first_over_last(net, x, seed):
    y = np.random.default_rng(seed).integers(0, 10, x.shape[0])
    df = dl.probe(net, x, y, loss="cross_entropy")
    g = df[(df.layer >= 1) & (df.quantity == "grad_pre_std")].sort_values("layer").value
    return float(g.iloc[0] / g.iloc[-1])


def test_residual_batchnorm_net_with_an_affine_activation_gets_no_number():
    """An affine activation never whitens the batch (K'(0) = 1): the plain BN chain already
    says 'no prediction'; the residual + BN net gave the large-batch formula as covered, and
    with rank-8 inputs (200 examples, width 128, 6 blocks) the first block's gradient was
    ~2.0x that number on every seed (relu on full-rank inputs: 1.03-1.07x)."""
    W, K, n = 128, 6, 200
    sizes = [W] + [W] * (K + 1) + [10]
    p = predict_gradients(dl.mlp(sizes, "identity", "he_normal", residual=True,
                                 batchnorm=True))
    assert p.architecture == "residual+batchnorm"
    assert not p.covered and "affine" in p.note
    assert all(v is None for v in p.relative_std[:-1])
    # a relu residual + BN net keeps its number
    assert predict_gradients(dl.mlp(sizes, "relu", "he_normal", residual=True,
                                    batchnorm=True)).covered
    # why: the formula against measurement, one ratio per seed; the departure from 1 must be
    # beyond the seeds' own spread (one-sided t test at 0.5%, 2 degrees of freedom)
    formula = math.sqrt(propagate_residual(W, W, K, "identity", "he_normal",
                                           batchnorm=True).grad_pre_var.iloc[0])
    ratios = []
    for seed in range(3):
        net = dl.mlp(sizes, "identity", "he_normal", seed=seed, dtype="float64",
                     residual=True, batchnorm=True)
        g = np.random.default_rng(1000 + seed)
        x = g.normal(size=(n, 8)) @ g.normal(size=(8, W)) / math.sqrt(8)
        ratios.append(_first_over_last(net, x, seed) / formula)
    r = np.array(ratios)
    t = (r.mean() - 1.0) / (r.std(ddof=1) / math.sqrt(r.size))
    assert t > stats.t.ppf(0.995, r.size - 1), ratios
