"""Round 45 (engine45): the branch-free ReLU kernels give the NumPy definitions' bits, and the
speed benchmark's elementwise work stays on the values of a training step."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from helpers.kernels import load_engine_kernels

import depthlab as dl
from depthlab import accel
from depthlab.activations import get_activation

pytest.importorskip("numba")

DTYPES = ("float32", "float64")
BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture()
def compiled(monkeypatch):
    """The kernels loaded (as a long run has them)."""
    return load_engine_kernels(monkeypatch)


def _bits(a: np.ndarray) -> np.ndarray:
    """The raw bits of every entry (NaN payloads and signs, the sign of every zero)."""
    return a.view(np.uint32 if a.dtype == np.float32 else np.uint64)


def _specials(rng, shape, dtype) -> np.ndarray:
    """Random entries with zeros of both signs, infinities, NaNs of both signs, subnormals."""
    x = (rng.standard_normal(shape) * 4).astype(dtype)
    flat = x.reshape(-1)
    k = min(flat.size, 10)
    flat[:k] = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 1e-40, -1e-40, 3.0,
                         -3.0], dtype)[:k]
    rng.shuffle(flat)
    return x


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(37, 29), (1000,), (3, 7, 11), (1, 1), (0, 5)])
def test_relu_forward_kernel_gives_numpy_maximum_bits(compiled, dtype, shape):
    """``a = max(s, 0)``: +0 at s <= 0 (-0 included), s itself elsewhere, a NaN's own bits."""
    rng = np.random.default_rng(45)
    s = _specials(rng, shape, dtype)
    s_before = s.copy()
    fn = get_activation("relu")
    got = fn.forward(s)
    want = np.maximum(s, 0)
    assert got.dtype == want.dtype and got.shape == want.shape
    assert np.array_equal(_bits(got), _bits(want))
    assert np.array_equal(_bits(s), _bits(s_before))  # the input is not written
    assert not np.shares_memory(got, s)  # a new array, as np.maximum gives
    k = compiled
    out = np.empty_like(s)
    k.relu_forward(s, out)  # the kernel itself, not only the dispatch
    assert np.array_equal(_bits(out), _bits(want))


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_forward_takes_numpy_for_layouts_the_kernel_does_not(compiled, dtype):
    """A transposed view, a read-only array, an int array and a 0-d array: NumPy's result."""
    rng = np.random.default_rng(1)
    fn = get_activation("relu")
    s = _specials(rng, (13, 17), dtype)
    ro = s.copy()
    ro.flags.writeable = False
    for x in (s.T, ro, np.asarray(s[0, 0])):
        assert np.array_equal(_bits(np.asarray(fn.forward(x), dtype)),
                              _bits(np.asarray(np.maximum(x, 0), dtype)))
    ints = np.array([[-2, 0, 3]])
    assert fn.forward(ints).tolist() == [[0, 0, 3]] and fn.forward(ints).dtype == ints.dtype


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ["finite", "inf at inactive", "nan at active", "all nan"])
def test_relu_backward_kernel_gives_the_numpy_definitions_bits(compiled, dtype, case):
    """``g * 1[not s <= 0]`` (the 0/1 factor multiplied, as ``g *= keep``), ``+0`` at every
    inactive unit once the product holds a NaN: bit for bit the NumPy path's."""
    rng = np.random.default_rng(7)
    s = _specials(rng, (64, 33), dtype)
    g = (rng.standard_normal(s.shape) * 3).astype(dtype)
    if case == "inf at inactive":
        g[s <= 0] = -np.inf
    elif case == "nan at active":
        g[np.argwhere(s > 0)[0][0], np.argwhere(s > 0)[0][1]] = np.nan
    elif case == "all nan":
        g[...] = np.nan
    fn = get_activation("relu")
    a = fn.forward(s)
    with accel.numpy_only():
        want = fn.backward(s, a, g.copy())
    got = fn.backward(s, a, g.copy())
    num = ~np.isnan(want)  # a NaN's sign bit from x86's inf * 0 is not the definition's
    assert np.array_equal(np.isnan(got), np.isnan(want))
    assert np.array_equal(_bits(got[num]), _bits(want[num]))
    if case != "finite":
        assert np.all(_bits(got[s <= 0]) == 0)  # +0 at every inactive unit, as torch


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_network_trains_to_the_same_bits_on_both_paths(compiled, dtype):
    """A deep ReLU net under SGD with momentum: both paths, identical parameters."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((24, 12)).astype(dtype)
    runs = []
    for numpy_path in (True, False):
        net = dl.mlp([12, 16, 16, 16, 3], activation="relu", init="he_normal", seed=3, dtype=dtype)
        opt = dl.optimizer("sgd", net.parameters(), lr=0.05, momentum=0.9)
        for _ in range(12):
            if numpy_path:
                with accel.numpy_only():
                    out = net.forward(x)
                    net.backward(np.sign(out) * 0.1)
                    opt.step()
            else:
                out = net.forward(x)
                net.backward(np.sign(out) * 0.1)
                opt.step()
        runs.append([p.value.copy() for p in net.parameters()])
    for a, b in zip(*runs):
        assert np.array_equal(_bits(a), _bits(b))


def _engine_speed():
    sys.path.insert(0, str(BENCH))
    try:
        import engine_speed
    finally:
        sys.path.remove(str(BENCH))
    return engine_speed


@pytest.mark.parametrize("activation", ["sigmoid", "relu"])
def test_benchmark_elementwise_work_stays_on_step_values(activation):
    """The breakdown's elementwise work repeated many times stays finite and returns to its
    start (the bias added then subtracted, the SGD step's sign alternating): the earlier block
    fed the bias sums back into the activations, which overflowed to inf/NaN within 20
    repeats, so that 'elementwise' was timed on inf and NaN."""
    es = _engine_speed()
    state: dict = {}
    ops = es.elementwise_ops([8, 6, 6, 3], activation, 5, state)
    assert tuple(ops) == es.ELEMENTWISE_OPS
    hs = state["h"]
    start = [a.copy() for a in hs + state["w"] + state["b"]]
    for _ in range(400):
        for f in ops.values():
            f()
    for a, a0 in zip(hs + state["w"] + state["b"], start):
        assert np.all(np.isfinite(a))
        np.testing.assert_allclose(a, a0, rtol=0, atol=1e-4)
