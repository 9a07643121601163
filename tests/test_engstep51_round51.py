"""engstep51: fewer passes and calls in the NumPy engine's training step, the same bits.

* the sigmoid's forward with the compiled kernels: ``a = -s`` and ``a = 1 / (1 + a)`` around
  NumPy's ``exp`` (``kernels.negate_over``, ``kernels.sigmoid_tail``), the overflow flag
  silenced only where ``e^-s`` can overflow;
* the softmax cross-entropy of integer labels: its passes around NumPy's ``exp`` and ``log``
  (``kernels.shift_rows``, ``normalize_rows`` with NumPy's pairwise row sums,
  ``subtract_pick``) and its backward in one pass (``kernels.softmax_grad``);
* plain SGD: ``lr * sign`` rounded once per step and dtype, no scratch or direction lookups.

Each is compared bit for bit with the NumPy path that defines it (``accel.numpy_only``), on
values with zeros of both signs, overflow, inf and NaN, and a few training steps end with the
same parameters, gradients and losses either way."""

from __future__ import annotations

import hashlib
import warnings

import numpy as np
import pytest
from helpers.kernels import load_engine_kernels

import depthlab as dl
from depthlab import accel
from depthlab.activations import Sigmoid
from depthlab.losses import CrossEntropy
from depthlab.optimizers import get_optimizer
from depthlab.parameter import Parameter

pytest.importorskip("numba")


@pytest.fixture()
def compiled(monkeypatch):
    """The kernels loaded (as a long run has them)."""
    return load_engine_kernels(monkeypatch)


def _bits(a) -> bytes:
    return np.asarray(a).tobytes()


def _both(fn):
    """``fn()`` with the kernels and on the NumPy path, each with the warnings it gave."""
    out = []
    for numpy_path in (False, True):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if numpy_path:
                with accel.numpy_only():
                    res = fn()
            else:
                res = fn()
        out.append((res, [str(w.message) for w in caught]))
    return out


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sigmoid_forward_kernels_give_numpy_bits(compiled, dtype) -> None:
    rng = np.random.default_rng(0)
    s = np.concatenate([rng.standard_normal(5000) * 30, rng.standard_normal(500) * 1000,
                        [0.0, -0.0, np.inf, -np.inf, np.nan, 88.0, -88.0, -88.5, -89.0,
                         -709.5, -710.0, -720.0, 1e-45, -1e-45, 3e38, -3e38]]).astype(dtype)
    s = np.ascontiguousarray(s[:5512].reshape(-1, 8))
    (a, wa), (b, wb) = _both(lambda: Sigmoid().forward(s))
    assert _bits(a) == _bits(b)
    assert wa == wb == []  # e^-s overflowing to inf is silenced on both paths
    # in range: no overflow, the same bits too
    s2 = (rng.standard_normal((60, 100)) * 4).astype(dtype)
    (a, _), (b, _) = _both(lambda: Sigmoid().forward(s2))
    assert _bits(a) == _bits(b)
    assert a is not s2 and a.dtype == s2.dtype


def test_sigmoid_kernels_are_the_numpy_passes(compiled) -> None:
    """The kernels themselves: ``a = -s`` with the overflow test, ``a = 1 / (1 + a)``."""
    k = compiled
    s = np.array([[1.0, -87.9, 0.0], [-0.0, 2.0, np.nan]], dtype=np.float32)
    a = np.empty_like(s)
    assert not k.negate_over(s, a, 88.0)
    assert _bits(a) == _bits(np.negative(s))
    s[0, 1] = -88.5
    assert k.negate_over(s, a, 88.0)
    s[0, 1] = -np.inf
    assert k.negate_over(s, a, 88.0)
    with np.errstate(over="ignore"):  # e^100: inf in float32, 1 / (1 + inf) = 0
        e = np.exp(np.linspace(-100, 100, 999, dtype=np.float32)).reshape(27, 37)
    ref = e + 1
    np.reciprocal(ref, out=ref)
    k.sigmoid_tail(e)
    assert _bits(e) == _bits(ref)


def _ce_cases():
    rng = np.random.default_rng(1)
    for dtype in (np.float32, np.float64):
        for c in (1, 2, 7, 8, 9, 10, 17, 128, 129, 300):
            for b in (1, 5, 60):
                for scale in (0.1, 3.0, 40.0, 1e37):
                    z = (rng.standard_normal((b, c)) * scale).astype(dtype)
                    yield dtype, c, b, scale, z, rng.integers(0, c, b)


@pytest.mark.parametrize("eps", [0.0, 0.1])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_kernels_give_numpy_bits(compiled, eps, reduction) -> None:
    for dtype, c, b, scale, z, y in _ce_cases():
        if scale == 3.0 and c > 2:
            z[0] = -np.abs(z[0])
            z[0, 1] = 0.0  # a row whose largest logit is 0 (its sign: NumPy's reduction's)
        if scale == 40.0 and c > 2:
            z[-1, 0] = -np.inf
        if scale == 0.1 and c > 3 and b > 1:
            z[1, 2] = np.nan
        loss = CrossEntropy(label_smoothing=eps, reduction=reduction)
        up = None if reduction != "none" else np.linspace(-1, 1, b)

        def run(loss=loss, z=z, y=y, up=up):
            return loss.forward(z, y), loss.backward(up)

        ((va, ga), wa), ((vb, gb), wb) = _both(run)
        where = (dtype, c, b, scale)
        assert _bits(va) == _bits(vb), where
        assert _bits(ga) == _bits(gb) and ga.dtype == gb.dtype, where
        assert wa == wb, where


def test_cross_entropy_takes_the_kernels_for_labels(compiled) -> None:
    """Finite logits of up to 128 classes and labels in range take the compiled passes (the
    comparisons above would pass if they never ran)."""
    rng = np.random.default_rng(2)
    z = rng.standard_normal((60, 10)).astype(np.float32)
    y = rng.integers(0, 10, 60).astype(np.intp)
    loss = CrossEntropy()
    assert loss._labels_nll(z, y) is not None
    assert loss._labels_nll(np.zeros((3, 129), np.float32), np.zeros(3, np.intp)) is None
    with accel.numpy_only():
        assert loss._labels_nll(z, y) is None


def test_cross_entropy_row_sums_follow_numpy_pairwise_order(compiled) -> None:
    k = compiled
    rng = np.random.default_rng(3)
    for dtype in (np.float32, np.float64):
        for c in range(1, 129):
            p = np.exp(rng.standard_normal((4, c)) * 6).astype(dtype)
            p[0, 0] = -0.0
            ref_sums = p.sum(axis=1, keepdims=True)
            with np.errstate(invalid="ignore"):  # one column of -0.0: 0 / 0
                ref = p / ref_sums
            sums = np.empty((4, 1), dtype)
            k.normalize_rows(p, sums)
            assert _bits(sums) == _bits(ref_sums), (dtype, c)
            assert _bits(p) == _bits(ref), (dtype, c)


def test_cross_entropy_bad_labels_keep_their_errors(compiled) -> None:
    z = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match="label 4 out of range; expected labels in 0..3"):
        CrossEntropy().forward(z, np.array([0, 4, 1]))
    with pytest.raises(ValueError, match="label -1 out of range"):
        CrossEntropy().forward(z, np.array([0, -1, 1]))
    with pytest.raises(ValueError, match="3 labels"):
        CrossEntropy().forward(np.zeros((2, 4), np.float32), np.array([0, 1, 2]))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("settings", [{}, dict(maximize=True), dict(weight_decay=1e-2),
                                      dict(weight_decay=1e-2, maximize=True)])
def test_plain_sgd_kernels_give_numpy_bits(compiled, dtype, settings) -> None:
    rng = np.random.default_rng(4)

    def params():
        r = np.random.default_rng(5)
        return [Parameter(f"p{i}", (r.standard_normal(shape) * 3).astype(dtype))
                for i, shape in enumerate([(7, 5), (5,), (3, 4, 2), ()])]

    grads = [[(rng.standard_normal(p.value.shape) * 2).astype(dtype) for p in params()]
             for _ in range(3)]
    runs = []
    for numpy_path in (False, True):
        ps = params()
        opt = get_optimizer("sgd", ps, lr=0.1, **settings)
        for step, gs in enumerate(grads):
            for p, g in zip(ps, gs):
                p.grad = g.copy()
            if step == 2:
                opt.lr = 0.037  # changed between steps: rounded again
            if numpy_path:
                with accel.numpy_only():
                    opt.step()
            else:
                opt.step()
        runs.append(b"".join(_bits(p.value) for p in ps))
    assert runs[0] == runs[1]


def test_sgd_rounds_lr_per_dtype_in_one_step(compiled) -> None:
    """float32 and float64 parameters in one optimizer: each gets lr rounded to its dtype."""
    w32 = Parameter("w32", np.ones(3, np.float32))
    w64 = Parameter("w64", np.ones(3, np.float64))
    w32.grad = np.ones(3, np.float32)
    w64.grad = np.ones(3, np.float64)
    get_optimizer("sgd", [w32, w64], lr=0.1).step()
    assert w32.value[0] == np.float32(1) - np.float32(0.1)
    assert w64.value[0] == 1.0 - 0.1


def _train_digest(steps: int = 4) -> str:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8 * 12, 20)).astype(np.float32)
    y = rng.integers(0, 5, 8 * 12)
    net = dl.mlp([20, 16, 16, 5], activation="sigmoid", init="glorot_uniform", seed=1)
    loss = dl.loss("cross_entropy")
    opt = dl.optimizer("sgd", net.parameters(), lr=0.5)
    h = hashlib.sha1()
    for i in range(steps):
        xb, yb = x[i * 12:(i + 1) * 12], y[i * 12:(i + 1) * 12]
        h.update(np.float64(loss.forward(net.forward(xb), yb)).tobytes())
        net.backward(loss.backward(), input_grad=False)
        opt.step()
    for p in net.parameters():
        h.update(p.value.tobytes())
        h.update(p.grad.tobytes())
    return h.hexdigest()


def test_sigmoid_net_steps_same_bits_with_and_without_kernels(compiled) -> None:
    fast = _train_digest()
    with accel.numpy_only():
        slow = _train_digest()
    assert fast == slow


def test_dense_backward_fast_path_keeps_checks_and_values() -> None:
    """Dense.backward's checked-once path (a C-contiguous gradient of the layer's dtype and the
    forward output's shape) gives what the general path gives, and any other gradient still
    meets the checks: another shape or a backward before forward is one clear error, a float64
    or Fortran-order gradient is cast (float32 out)."""
    from depthlab.layers import Dense

    rng = np.random.default_rng(6)
    d = Dense(5, 3, rng=0)
    with pytest.raises(RuntimeError, match="backward\\(\\) called before forward"):
        d.backward(np.zeros((4, 3), np.float32))
    x = rng.standard_normal((4, 5)).astype(np.float32)
    d.forward(x)
    g = rng.standard_normal((4, 3)).astype(np.float32)
    dx = d.backward(g)
    wg, bg = d.W.grad.copy(), d.b.grad.copy()
    for other in (g.astype(np.float64), np.asfortranarray(g)):
        dx2 = d.backward(other)
        assert dx2.dtype == np.float32 and _bits(dx2) == _bits(dx)
        assert _bits(d.W.grad) == _bits(wg) and _bits(d.b.grad) == _bits(bg)
    assert d.backward(g, input_grad=False) is None
    with pytest.raises(ValueError, match="got a gradient of shape \\(4, 2\\); expected the "
                                         "forward output's shape \\(4, 3\\)"):
        d.backward(np.zeros((4, 2), np.float32))
    with pytest.raises(ValueError, match="got a gradient of shape \\(3, 3\\)"):
        d.backward(np.zeros((3, 3), np.float32))
    d.forward(x[:2])  # a new batch size: its own shape is expected
    with pytest.raises(ValueError, match="expected the forward output's shape \\(2, 3\\)"):
        d.backward(g)


def test_cross_entropy_labels_of_every_integer_dtype() -> None:
    z = np.array([[0.0, 1.0, 2.0], [2.0, 0.0, 1.0], [1.0, 2.0, 0.0]], np.float32)
    ref = CrossEntropy().forward(z, np.array([0, 2, 1]))
    for dt in ("int8", "uint8", ">i4", "<i2", "int64", "uint64"):
        assert CrossEntropy().forward(z, np.array([0, 2, 1], dtype=dt)) == ref
    with pytest.raises(ValueError, match="label -1 out of range; expected labels in 0..2"):
        CrossEntropy().forward(z, np.array([0, -1, 1], dtype=">i4"))
