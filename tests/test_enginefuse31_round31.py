"""The engine's compiled fast path (depthlab.accel / depthlab.kernels): the same bits as the
NumPy expressions that define each step, the NumPy path without Numba, and no Numba import
(0.3-1 s) for a short run."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from helpers.kernels import load_engine_kernels

import depthlab as dl
from depthlab import accel
from depthlab.activations import get_activation
from depthlab.layers.dense import Dense

pytest.importorskip("numba")

DTYPES = ("float32", "float64")


@pytest.fixture()
def compiled(monkeypatch):
    """The kernels loaded (as a long run has them)."""
    return load_engine_kernels(monkeypatch)


def _same_bits(a: np.ndarray, b: np.ndarray) -> None:
    """Equal entries, NaN where NaN, and the same sign of every zero (a NaN's sign bit, which
    x86 sets on the NaN of ``inf * 0`` and a ufunc may not, is not compared)."""
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(a, b)
    num = ~np.isnan(a)
    assert np.array_equal(np.signbit(a[num]), np.signbit(b[num]))


def _nasty(rng, shape, dtype):
    """Random entries with zeros of both signs, saturating values, inf and NaN."""
    x = (rng.standard_normal(shape) * 6).astype(dtype)
    flat = x.reshape(-1)
    flat[:8] = [0.0, -0.0, np.inf, -np.inf, np.nan, 40.0, -40.0, 1e-30]
    rng.shuffle(flat)
    return x


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["sigmoid", "tanh", "relu"])
def test_activation_backward_gives_the_numpy_definitions_bits(compiled, name, dtype):
    rng = np.random.default_rng(3)
    fn = get_activation(name)
    for bad in (False, True):  # finite gradients; then with inf and NaN among them
        s = _nasty(rng, (37, 29), dtype)
        a = fn.forward(s)
        g = (rng.standard_normal(s.shape) * 3).astype(dtype)
        if bad:
            g = _nasty(rng, s.shape, dtype)
        if name == "relu" and bad:
            g[s <= 0] = np.inf  # inf at inactive units: 0 there, not inf * 0 = NaN
            g[0, 0], s[0, 0] = np.nan, 1.0  # and a NaN elsewhere
        with accel.numpy_only():
            want = fn.backward(s, a, g.copy())
        got = fn.backward(s, a, g.copy())
        _same_bits(got, want)
    if name == "relu":
        assert got[s <= 0].tolist() == [0.0] * int((s <= 0).sum())  # as torch's threshold


@pytest.mark.parametrize("dtype", DTYPES)
def test_dense_and_sgd_steps_give_the_numpy_paths_bits(compiled, dtype):
    """A few training steps of sigmoid, tanh and ReLU layers under SGD (plain, momentum,
    Nesterov with weight decay, maximize): the same parameters bit for bit on both paths."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((24, 12)).astype(dtype)
    y = rng.integers(0, 4, 24)
    settings = [dict(lr=0.3), dict(lr=0.2, momentum=0.9),
                dict(lr=0.1, momentum=0.8, nesterov=True, weight_decay=1e-2),
                dict(lr=0.05, maximize=True)]
    for act in ("sigmoid", "tanh", "relu"):
        for kw in settings:
            runs = []
            for numpy_path in (True, False):
                net = dl.mlp([12, 16, 16, 4], activation=act, seed=1, dtype=dtype)
                loss = dl.loss("cross_entropy")
                opt = dl.optimizer("sgd", net.parameters(), **kw)
                with accel.numpy_only() if numpy_path else _nothing():
                    for _ in range(4):
                        out = net.forward(x)
                        loss.forward(out, y)
                        net.backward(loss.backward(), input_grad=False)
                        opt.step()
                runs.append([p.value.copy() for p in net.parameters()]
                            + [p.grad.copy() for p in net.parameters()] + [out.copy()])
            for a, b in zip(*runs):
                _same_bits(a, b)


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("width", [5, 1])  # one output: NumPy sums its column pairwise
def test_dense_layouts_empty_batches_and_bad_values(compiled, dtype, width):
    rng = np.random.default_rng(5)
    layer = Dense(7, width, rng=0, dtype=dtype)
    layer.b.value[...] = rng.standard_normal(width)
    for x, g in [
        (rng.standard_normal((9, 7)), _nasty(rng, (9, width), dtype)),      # NaN and inf
        (rng.standard_normal((300, 7)), rng.standard_normal((300, width))),  # long columns
        (rng.standard_normal((7, 9)).T, np.asfortranarray(rng.standard_normal((9, width)))),
        (np.zeros((0, 7)), np.zeros((0, width))),                            # no rows
        (rng.standard_normal((3, 7)), -np.zeros((3, width))),                # -0 sums
    ]:
        x, g = x.astype(dtype), g.astype(dtype)
        outs = []
        for numpy_path in (True, False):
            with accel.numpy_only() if numpy_path else _nothing():
                yv = layer.forward(x)
                dx = layer.backward(g.copy())
                outs.append((yv, dx, layer.W.grad.copy(), layer.b.grad.copy()))
        for a, b in zip(*outs):
            _same_bits(a, b)


def test_without_numba_the_numpy_path_trains(monkeypatch):
    import depthlab

    monkeypatch.delattr(depthlab, "kernels", raising=False)
    monkeypatch.setitem(sys.modules, "depthlab.kernels", None)  # the import fails
    monkeypatch.setitem(accel._state, "kernels", accel._UNSET)
    assert accel.kernels() is None
    net = dl.mlp([6, 8, 3], activation="relu", seed=0)
    x = np.random.default_rng(0).standard_normal((10, 6)).astype(np.float32)
    before = net.parameters()[0].value.copy()
    loss = dl.loss("cross_entropy")
    opt = dl.optimizer("sgd", net.parameters(), lr=0.5)
    out = net.forward(x)
    loss.forward(out, np.arange(10) % 3)
    net.backward(loss.backward())
    opt.step()
    assert not np.array_equal(before, net.parameters()[0].value)


def test_the_kernels_are_loaded_after_the_rent_period(monkeypatch):
    """Default mode: NumPy for the first LOAD_AFTER_S seconds of the process's engine work,
    then the kernels (a long run)."""
    monkeypatch.delenv(accel.ENV, raising=False)
    monkeypatch.setitem(accel._state, "kernels", accel._UNSET)
    monkeypatch.setitem(accel._state, "since", None)
    a = np.ones((3, 2), np.float32)
    assert accel.fits(a, a) is None  # the first step: the clock starts
    monkeypatch.setattr(accel, "LOAD_AFTER_S", 0.0)
    assert accel.fits(a, a) is not None
    assert accel.fits(a, a.astype(np.float64)) is None  # one dtype only
    assert accel.fits(a, a[:, :1]) is None               # C-contiguous only
    assert accel.fits(a.astype(np.float16), a.astype(np.float16)) is None


def _child(code: str, **env: str) -> str:
    full = {k: v for k, v in os.environ.items() if k != accel.ENV}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**full, **env}, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


STEP = ("import sys, numpy as np, depthlab as dl\n"
        "net = dl.mlp([5, 4, 2], activation='tanh', seed=0)\n"
        "loss = dl.loss('cross_entropy'); opt = dl.optimizer('sgd', net.parameters(), lr=0.1)\n"
        "loss.forward(net.forward(np.ones((3, 5), np.float32)), np.array([0, 1, 0]))\n"
        "net.backward(loss.backward()); opt.step()\n"
        "print('numba' in sys.modules, net.parameters()[0].value.sum().item())")


def test_a_short_run_does_not_pay_for_numba_and_the_setting_chooses():
    """A short run (a test, a small command) never imports Numba (0.3-1 s); =numba loads the
    kernels at the first step, with the same numbers."""
    quick, value = _child(STEP).split()
    assert quick == "False"
    assert _child(STEP, DEPTHLAB_ENGINE_KERNELS="numba").split() == ["True", value]
