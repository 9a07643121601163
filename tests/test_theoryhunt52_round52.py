"""theoryhunt52 (round 52): regression tests for bugs found probing the NumPy engine's public
API, theory and probes with inputs earlier rounds did not try."""

from __future__ import annotations

import math

import numpy as np
import pytest

from depthlab.theory.meanfield import (
    c_map,
    gradient_growth,
    length_map_slope,
    meanfield,
    q_map,
    slope_chi1,
)
from depthlab.theory.variance import propagate


@pytest.mark.parametrize("name", ["tanh", "relu", "selu", "gelu", "sigmoid", "step"])
@pytest.mark.parametrize("sigma_b2", [0.0, 0.3, 1e-30])
def test_meanfield_accepts_zero_weight_variance(name: str, sigma_b2: float) -> None:
    # sigma_w2 = 0: every unit outputs its bias, q* = sigma_b2 and no gradient passes back
    # (chi1 = 0); meanfield refused it ("must be finite and > 0") while propagate accepts a
    # weight variance of 0 and predicts exactly that
    m = meanfield(name, 0.0, sigma_b2)
    assert m.q_star == sigma_b2 and m.converged
    assert (m.chi1, m.chi_c, m.chi_q) == (0.0, 0.0, 0.0)
    assert m.c_star == 1.0 and m.phase == "ordered"
    assert (m.xi_c, m.xi_q, m.trainable_depth) == (0.0, 0.0, 0.0)
    assert slope_chi1(name, 0.0, sigma_b2) == 0.0
    assert length_map_slope(name, 0.0, sigma_b2) == 0.0
    assert q_map(name, 2.0, 0.0, sigma_b2) == sigma_b2
    assert gradient_growth(name, 0.0, sigma_b2, 5) == 0.0
    rows = propagate([16, 16, 16, 16], name, init=0.0, bias_var=sigma_b2)
    assert np.allclose(rows["pre_var"].iloc[1:], sigma_b2, rtol=0, atol=0)


def test_meanfield_zero_weights_correlation_and_refusals() -> None:
    assert c_map("tanh", 0.2, 0.0, 0.3) == pytest.approx(1.0, rel=1e-14)  # all outputs = b
    for bad in (-1e-12, math.inf, math.nan):
        with pytest.raises(ValueError, match=r"sigma_w2 must be finite and >= 0"):
            meanfield("tanh", bad)
