"""Round 33b (predictspeed33): the BatchNorm channel moments of ``dlt.predict`` computed for all
``(gamma, beta)`` pairs at once must equal the one-pair-at-a-time quadrature they replaced."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from depthlab.theory.batchnorm import bn_moments
from depthlab.theory.gaussian import ScalarActivation, gaussian_rule, gaussian_rules
from depthlab.torch.layers import activation_spec
from depthlab.torch.propagation import _pair_moments


def test_gaussian_rules_are_gaussian_rule_for_each_pair() -> None:
    """Every pair's block: the same nodes as ``gaussian_rule(var, mean)``, weights to 1e-14
    (narrow and wide rules, mean 0, var 0, a mean far in the tail)."""
    var = np.array([0.25, 1.0, 2.25, 0.0, 4.0, 1e6, 1e-12, 9.0])
    mean = np.array([0.3, -0.7, 0.0, 1.5, 30.0, -2.0, 1e-3, -0.2])
    s, w, starts = gaussian_rules(var, mean)
    ends = np.append(starts[1:], s.size)
    for v, m, i, j in zip(var, mean, starts, ends):
        ref_s, ref_w = gaussian_rule(float(v), float(m))
        np.testing.assert_array_equal(s[i:j], ref_s)
        np.testing.assert_allclose(w[i:j], ref_w, rtol=1e-14, atol=0)
    with pytest.raises(ValueError, match="variance"):
        gaussian_rules(np.array([1.0, -1.0]), np.array([0.5, 0.5]))


@pytest.mark.parametrize("module", [nn.ReLU(), nn.Tanh(), nn.GELU()])
def test_pair_moments_equal_the_per_channel_quadrature(module: nn.Module) -> None:
    """``_pair_moments`` (BN/LayerNorm/GroupNorm channels of ``dlt.predict``) against a direct
    average of ``bn_moments`` over the channels: E f, E f^2, Var f, gamma^2 E f'^2."""
    spec = activation_spec(module)

    def t(f):
        return lambda s: f(torch.from_numpy(np.ascontiguousarray(s, np.float64))).numpy()

    fn = ScalarActivation(spec.name, t(spec.function), t(spec.derivative))
    rng = np.random.default_rng(3)
    g = np.append(rng.uniform(0.5, 1.5, 40), [0.0, 2.0])
    b = np.append(rng.uniform(-0.5, 0.5, 40), [0.4, 0.0])
    share = np.full(g.size, 1.0 / g.size)
    r = 0.9
    ref = np.zeros(4)
    for gc, bc, k in zip(g, b, share):
        var = gc * gc * r
        if var == 0.0:
            m, sq, dsq = fn.f(np.array([bc]))[0], fn.f(np.array([bc]))[0] ** 2, \
                fn.df(np.array([bc]))[0] ** 2
        else:
            m, sq, dsq, _ = bn_moments(fn, var, bc)
        ref += k * np.array([m, sq, max(sq - m * m, 0.0), gc * gc * dsq])
    np.testing.assert_allclose(_pair_moments(g, b, share, spec, r), ref, rtol=1e-12, atol=0)
