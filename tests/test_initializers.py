"""Initializers: sample moments against the variance formulas, limits, orthogonality,
determinism, dtypes and registry errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from depthlab.backend import rng
from depthlab.initializers import (
    INITIALIZERS,
    compute_fans,
    get_initializer,
    orthogonal,
    variance_scaling,
    weight_variance,
)

FAN_IN, FAN_OUT = 1000, 500

# (name, kwargs, expected variance for (FAN_IN, FAN_OUT), uniform limit or None)
CASES = [
    ("normal", {}, 1.0, None),
    ("normal", {"std": 0.05}, 0.05**2, None),
    ("uniform", {}, 1 / 3, 1.0),
    ("uniform", {"limit": 0.2}, 0.2**2 / 3, 0.2),
    ("fan_in_uniform", {}, 1 / (3 * FAN_IN), 1 / math.sqrt(FAN_IN)),
    ("glorot_normal", {}, 2 / (FAN_IN + FAN_OUT), None),
    ("glorot_uniform", {}, 2 / (FAN_IN + FAN_OUT), math.sqrt(6 / (FAN_IN + FAN_OUT))),
    ("he_normal", {}, 2 / FAN_IN, None),
    ("he_normal", {"mode": "fan_out"}, 2 / FAN_OUT, None),
    ("he_uniform", {}, 2 / FAN_IN, math.sqrt(6 / FAN_IN)),
    ("lecun_normal", {}, 1 / FAN_IN, None),
    ("lecun_uniform", {}, 1 / FAN_IN, math.sqrt(3 / FAN_IN)),
    ("variance_scaling", {}, 1 / FAN_IN, None),
    ("variance_scaling", {"scale": 3.0, "mode": "fan_out", "distribution": "uniform"},
     3 / FAN_OUT, math.sqrt(9 / FAN_OUT)),
    ("variance_scaling", {"scale": 0.5, "mode": "fan_avg"}, 0.5 / 750, None),
    ("orthogonal", {}, 1 / FAN_IN, None),
    ("orthogonal", {"gain": 2.0}, 4 / FAN_IN, None),
]
IDS = [n + "".join(f"-{k}={v}" for k, v in kw.items()) for n, kw, _, _ in CASES]


def test_registry_names():
    assert set(INITIALIZERS) == {
        "normal", "uniform", "fan_in_uniform", "glorot_normal", "glorot_uniform", "he_normal",
        "he_uniform", "lecun_normal", "lecun_uniform", "zeros", "constant", "orthogonal",
        "variance_scaling", "trunc_normal",
    }
    assert "lsuv" not in INITIALIZERS


@pytest.mark.parametrize("name,kwargs,var,limit", CASES, ids=IDS)
def test_moments_match_the_formula(name, kwargs, var, limit):
    init = get_initializer(name, **kwargs)
    w = init((FAN_IN, FAN_OUT), rng(0), "float64")
    assert w.shape == (FAN_IN, FAN_OUT) and w.dtype == np.float64
    std = math.sqrt(var)
    assert abs(w.mean()) < 5 * std / math.sqrt(w.size)
    assert w.var() == pytest.approx(var, rel=0.03)
    assert weight_variance(name, FAN_IN, FAN_OUT, **kwargs) == pytest.approx(var, rel=1e-12)
    if limit is not None:
        assert np.abs(w).max() <= limit
        assert np.abs(w).max() > 0.99 * limit  # the whole interval is used
        w32 = init((FAN_IN, FAN_OUT), rng(0), "float32")
        assert np.abs(w32).astype(np.float64).max() <= limit
    else:
        kurt = np.mean((w - w.mean()) ** 4) / w.var() ** 2
        assert kurt == pytest.approx(3.0, abs=0.1)  # Gaussian (uniform would be 1.8)


def test_uniform_kurtosis_is_uniform():
    w = get_initializer("glorot_uniform")((FAN_IN, FAN_OUT), rng(1), "float64")
    kurt = np.mean(w**4) / np.mean(w**2) ** 2
    assert kurt == pytest.approx(1.8, abs=0.05)


def test_special_cases_of_variance_scaling():
    pairs = [
        ("glorot_normal", variance_scaling(1.0, "fan_avg", "normal")),
        ("glorot_uniform", variance_scaling(1.0, "fan_avg", "uniform")),
        ("he_normal", variance_scaling(2.0, "fan_in", "normal")),
        ("he_uniform", variance_scaling(2.0, "fan_in", "uniform")),
        ("lecun_normal", variance_scaling(1.0, "fan_in", "normal")),
        ("lecun_uniform", variance_scaling(1.0, "fan_in", "uniform")),
    ]
    for name, vs in pairs:
        a = get_initializer(name)((30, 20), rng(3), "float64")
        b = vs((30, 20), rng(3), "float64")
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("shape", [(300, 120), (120, 300), (64, 64)])
@pytest.mark.parametrize("gain", [1.0, 1.7])
def test_orthogonal(shape, gain):
    w = orthogonal(gain)(shape, rng(4), "float64")
    assert w.shape == shape
    small = min(shape)
    gram = w.T @ w if shape[0] >= shape[1] else w @ w.T
    np.testing.assert_allclose(gram, gain**2 * np.eye(small), atol=1e-12)
    # sign(diag R) correction: the result is not a sign-biased matrix
    assert abs(w.mean()) < 0.1 * gain / math.sqrt(max(shape))
    sq = np.mean(w**2)
    assert sq == pytest.approx(weight_variance("orthogonal", *shape, gain=gain), rel=1e-10)


def test_orthogonal_rejects_1d_and_flattens_nd():
    with pytest.raises(ValueError, match="2 or more dimensions"):
        orthogonal()((10,), rng(0), "float64")
    w = orthogonal()((3, 4, 5), rng(0), "float64").reshape(12, 5)
    np.testing.assert_allclose(w.T @ w, np.eye(5), atol=1e-12)


def test_orthogonal_float32():
    w = get_initializer("orthogonal")((200, 50), rng(5), "float32")
    assert w.dtype == np.float32
    np.testing.assert_allclose(w.T @ w, np.eye(50), atol=1e-5)


@pytest.mark.parametrize("name", INITIALIZERS)
def test_deterministic_for_a_seed_and_dtype_respected(name):
    init = get_initializer(name)
    for dtype, np_dtype in (("float32", np.float32), ("float64", np.float64), (np.float32,
                                                                               np.float32)):
        a = init((40, 30), rng(7), dtype)
        b = init((40, 30), rng(7), dtype)
        assert a.dtype == np_dtype
        np.testing.assert_array_equal(a, b)
    a32 = init((40, 30), rng(7), "float32")
    a64 = init((40, 30), rng(7), "float64")
    np.testing.assert_allclose(a32, a64, rtol=1e-6, atol=1e-7)
    if name not in ("zeros", "constant"):
        c = init((40, 30), rng(8), "float64")
        assert not np.array_equal(a64, c)


@pytest.mark.parametrize("name", [n for n in INITIALIZERS if n != "orthogonal"])
def test_bias_shapes_use_n_as_both_fans(name):
    init = get_initializer(name)
    b = init((400,), rng(9), "float64")
    assert b.shape == (400,)
    v = weight_variance(name, 400, 400)
    if v > 0:
        assert b.var() == pytest.approx(v, rel=0.25)


def test_compute_fans():
    assert compute_fans((7, 3)) == (7, 3)
    assert compute_fans((5,)) == (5, 5)
    assert compute_fans(()) == (1, 1)
    assert compute_fans((3, 3, 4, 8)) == (36, 72)
    with pytest.raises(ValueError, match="positive"):
        compute_fans((3, 0))


def test_zeros_and_constant():
    z = get_initializer("zeros")((3, 4), rng(0), "float32")
    assert z.dtype == np.float32 and not z.any()
    c = get_initializer("constant", value=0.5)((3,), rng(0), "float64")
    np.testing.assert_array_equal(c, 0.5)
    assert weight_variance("constant", 3, 4, value=2.0) == 0.0


def test_docstrings_give_the_variance():
    for name in INITIALIZERS:
        doc = get_initializer(name).__doc__
        assert doc and "Var" in doc, name
    assert "2 / (fan_in + fan_out)" in get_initializer("glorot_normal").__doc__
    assert "2 / fan_in" in get_initializer("he_normal").__doc__
    assert "1 / fan_in" in get_initializer("lecun_normal").__doc__


def test_errors():
    with pytest.raises(ValueError, match=r"unknown initializer 'foo'; expected one of: .*glorot"):
        get_initializer("foo")
    with pytest.raises(ValueError, match="unknown initializer 'lsuv'"):
        get_initializer("lsuv")
    with pytest.raises(TypeError, match="'gain'"):
        get_initializer("he_normal", gain=2.0)
    with pytest.raises(ValueError, match="mode"):
        variance_scaling(mode="fan_sum")
    with pytest.raises(ValueError, match="distribution"):
        variance_scaling(distribution="truncated")
    with pytest.raises(ValueError, match="scale"):
        variance_scaling(scale=0.0)
    with pytest.raises(ValueError, match="dtype"):
        get_initializer("normal")((2, 2), rng(0), "float16")
    with pytest.raises(ValueError, match="shape"):
        get_initializer("normal")((2, -1), rng(0), "float32")


def test_callables_pass_through():
    def my_init(shape, gen, dtype):
        return np.ones(shape, dtype=dtype)

    assert get_initializer(my_init) is my_init
    with pytest.raises(TypeError):
        get_initializer(my_init, std=1.0)
    assert get_initializer("xavier_uniform").name == "glorot_uniform"
