"""benchmarks/engine_speed.py's product table with every BLAS at hand (issue 14): each
library's call computes the step's product of its kind (``x.W``, ``xT.g``, ``g.WT``) on buffers in
the step's layouts; MKL (ctypes ``cblas_?gemm``) and BLIS join where installed. No timing is
asserted."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.scripts import load_script

KINDS = ("x.W", "xT.g", "g.WT")


@pytest.fixture(scope="module")
def es():
    return load_script("benchmarks/engine_speed.py")


def _operands(kind, m, k, n, dtype, seed=0):
    """The product_calls buffers rebuilt: the reference ``op(a) op(b)`` in float64."""
    rng = np.random.default_rng(seed)
    sa, sb = {"x.W": ((m, k), (k, n)), "xT.g": ((k, m), (k, n)),
              "g.WT": ((m, k), (n, k))}[kind]
    a = rng.standard_normal(sa).astype(dtype).astype(np.float64)
    b = rng.standard_normal(sb).astype(dtype).astype(np.float64)
    return (a.T if kind == "xT.g" else a) @ (b.T if kind == "g.WT" else b)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mkn", [(6, 5, 3), (7, 7, 7), (4, 9, 1)])
def test_every_library_computes_the_kinds_product(es, kind, mkn, dtype):
    m, k, n = mkn
    want = _operands(kind, m, k, n, dtype)
    calls = es.product_calls(kind, m, k, n, dtype)
    assert {"numpy", "scipy"} <= set(calls)
    tol = 1e-5 if dtype == "float32" else 1e-12
    for lib, call in calls.items():
        for _ in range(2):  # twice: a call that adds to what out holds (beta=1) differs
            got = np.asarray(call())
        assert got.shape == (m, n), lib
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol * 10, err_msg=lib)


def test_shape_rates_has_a_column_for_every_library(es):
    sizes, batch = [5, 4, 3], 6
    rows = es.shape_rates(sizes, batch, reps=1)
    libs = set(es.product_calls("x.W", 2, 2, 2))
    assert [(r["kind"], r["shape"]) for r in rows] == [
        (kind, f"({m}x{k})({k}x{n})") for kind, m, k, n in es.step_products(sizes, batch)]
    for r in rows:
        assert libs <= set(r) and all(r[lib] > 0 for lib in libs)
    run = es.best_products(sizes, batch, rows)
    run(2)


def test_mkl_gemm_refuses_what_it_cannot_pass_to_cblas(es):
    if es.mkl_library() is None:
        pytest.skip("MKL is not installed (pip install mkl)")
    a = np.ones((3, 4), np.float32)
    with pytest.raises(ValueError, match="C-contiguous"):
        es.mkl_gemm(np.asfortranarray(a), a.T.copy(), np.empty((3, 3), np.float32))
    with pytest.raises(ValueError, match="do not match"):
        es.mkl_gemm(a, a, np.empty((3, 4), np.float32))
    out = es.mkl_gemm(a, a, np.empty((3, 3), np.float32), trans_b=True)
    np.testing.assert_array_equal(out, np.full((3, 3), 4.0, np.float32))


def test_mkl_gemm_is_reproducible_bit_for_bit(es):
    if es.mkl_library() is None:
        pytest.skip("MKL is not installed (pip install mkl)")
    rng = np.random.default_rng(1)
    x, g = rng.standard_normal((64, 48), np.float32), rng.standard_normal((64, 40), np.float32)
    first = es.mkl_gemm(x, g, np.empty((48, 40), np.float32), trans_a=True).copy()
    for _ in range(3):
        again = es.mkl_gemm(x, g, np.empty((48, 40), np.float32), trans_a=True)
        assert np.array_equal(first, again)


def test_blas_paths_names_the_code_path_of_each_installed_library(es):
    paths = es.blas_paths()
    if es.mkl_library() is not None:
        a = np.ones((8, 8), np.float32)
        es.mkl_gemm(a, a, np.empty_like(a))  # loads MKL's kernel library
        assert "libmkl_" in es.blas_paths()["mkl"]
    try:
        import blis.py  # noqa: F401
    except ImportError:
        assert "blis" not in paths
    else:
        assert paths["blis"] in {"generic", "haswell", "zen", "zen2", "zen3", "skx", "knl",
                                 "sandybridge", "penryn", "bulldozer", "piledriver",
                                 "steamroller", "excavator", "cortexa57", "cortexa15",
                                 "cortexa9", "thunderx2", "firestorm", "power9", "power10"}
