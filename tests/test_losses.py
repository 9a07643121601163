"""Losses: value and gradient against PyTorch and finite differences, stability, validation."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch  # a dev dependency: required, never skipped

from depthlab.losses import LOSSES, Loss, get_loss

F = torch.nn.functional


def _torch_loss_and_grad(fn, pred: np.ndarray, target):
    zt = torch.tensor(pred, dtype=torch.float64, requires_grad=True)
    out = fn(zt, target)
    out.backward()
    return out.item(), zt.grad.numpy()


def _close(a, b, rtol=1e-10, atol=1e-15):
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


def _data(seed: int = 0, b: int = 12, c: int = 5):
    r = np.random.default_rng(seed)
    z = r.standard_normal((b, c)) * 3
    labels = r.integers(0, c, b)
    probs = r.dirichlet(np.ones(c), b)
    return r, z, labels, probs


def test_registry():
    assert set(LOSSES) == {"mse", "cross_entropy", "binary_cross_entropy", "huber"}
    for name in LOSSES:
        loss = get_loss(name)
        assert isinstance(loss, Loss) and loss.name == name
        assert get_loss(loss) is loss


@pytest.mark.parametrize("shape", [(12, 3), (7,), (4, 2, 3)])
def test_mse_matches_torch(shape):
    r = np.random.default_rng(1)
    pred, target = r.standard_normal(shape), r.standard_normal(shape)
    loss = get_loss("mse")
    ref, ref_g = _torch_loss_and_grad(
        lambda p, t: F.mse_loss(p, torch.tensor(t)), pred, target
    )
    _close(loss.forward(pred, target), ref)
    _close(loss.backward(), ref_g)


@pytest.mark.parametrize("delta", [1.0, 0.3, 2.5])
def test_huber_matches_torch(delta):
    r = np.random.default_rng(2)
    pred, target = r.standard_normal((20, 4)) * 2, r.standard_normal((20, 4))
    loss = get_loss("huber", delta=delta)
    ref, ref_g = _torch_loss_and_grad(
        lambda p, t: F.huber_loss(p, torch.tensor(t), delta=delta), pred, target
    )
    _close(loss.forward(pred, target), ref)
    _close(loss.backward(), ref_g)
    assert loss.params == {"delta": delta}


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_labels_and_probabilities_match_torch(smoothing):
    _, z, labels, probs = _data(3)
    loss = get_loss("cross_entropy", label_smoothing=smoothing)
    for target, tt in ((labels, torch.tensor(labels)), (probs, torch.tensor(probs))):
        ref, ref_g = _torch_loss_and_grad(
            lambda p, t: F.cross_entropy(p, t, label_smoothing=smoothing), z, tt
        )
        _close(loss.forward(z, target), ref)
        _close(loss.backward(), ref_g)


def test_cross_entropy_one_hot_equals_labels():
    _, z, labels, _ = _data(4)
    onehot = np.eye(z.shape[1])[labels]
    loss = get_loss("cross_entropy")
    v1, g1 = loss.forward(z, labels), loss.backward()
    v2, g2 = loss.forward(z, onehot), loss.backward()
    _close(v1, v2, rtol=1e-14)
    _close(g1, g2, rtol=1e-14)
    # float labels with integer values are accepted too
    _close(loss.forward(z, labels.astype(np.float64)), v1, rtol=1e-15)


@pytest.mark.parametrize("shape", [(10, 3), (9,)])
def test_bce_matches_torch(shape):
    r = np.random.default_rng(5)
    z = r.standard_normal(shape) * 4
    y = r.uniform(0, 1, shape)
    y[: shape[0] // 2] = np.round(y[: shape[0] // 2])
    loss = get_loss("binary_cross_entropy")
    ref, ref_g = _torch_loss_and_grad(
        lambda p, t: F.binary_cross_entropy_with_logits(p, torch.tensor(t)), z, y
    )
    _close(loss.forward(z, y), ref)
    _close(loss.backward(), ref_g)


def test_bce_column_pred_with_flat_target():
    r = np.random.default_rng(6)
    z = r.standard_normal((8, 1))
    y = r.integers(0, 2, 8).astype(np.float64)
    loss = get_loss("binary_cross_entropy")
    v = loss.forward(z, y)
    g = loss.backward()
    assert g.shape == (8, 1)
    ref, ref_g = _torch_loss_and_grad(
        lambda p, t: F.binary_cross_entropy_with_logits(p, torch.tensor(t)), z, y[:, None]
    )
    _close(v, ref)
    _close(g, ref_g)


def _fd_grad(loss: Loss, pred: np.ndarray, target, h: float = 1e-6) -> np.ndarray:
    out = np.empty_like(pred)
    for idx in np.ndindex(*pred.shape):
        p1, p2 = pred.copy(), pred.copy()
        p1[idx] += h
        p2[idx] -= h
        out[idx] = (loss.forward(p1, target) - loss.forward(p2, target)) / (2 * h)
    return out


FD_CASES = [
    ("mse", {}, "reg"),
    ("huber", {"delta": 0.7}, "reg"),
    ("cross_entropy", {}, "labels"),
    ("cross_entropy", {}, "probs"),
    ("cross_entropy", {"label_smoothing": 0.2}, "labels"),
    ("binary_cross_entropy", {}, "binary"),
]


@pytest.mark.parametrize("name,kwargs,kind", FD_CASES)
def test_finite_differences(name, kwargs, kind):
    r, z, labels, probs = _data(7, b=6, c=4)
    target = {
        "reg": r.standard_normal(z.shape),
        "labels": labels,
        "probs": probs,
        "binary": r.uniform(0, 1, z.shape),
    }[kind]
    if name == "huber":  # keep differences off the |d| = delta switch
        d = z - target
        z = np.where(np.abs(np.abs(d) - 0.7) < 1e-3, z + 0.01, z)
    loss = get_loss(name, **kwargs)
    loss.forward(z, target)
    g = loss.backward()
    fd = _fd_grad(loss, z, target)
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-9)


def test_backward_is_repeatable_and_fresh():
    _, z, labels, _ = _data(8)
    loss = get_loss("cross_entropy")
    loss.forward(z, labels)
    g1 = loss.backward()
    g1 *= 0  # the caller may overwrite the gradient
    g2 = loss.backward()
    assert np.abs(g2).sum() > 0


@pytest.mark.parametrize("scale", [1000.0, 1e5])
def test_stable_with_huge_logits(scale):
    r, z, labels, _ = _data(9)
    z = z / np.abs(z).max() * scale
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        warnings.simplefilter("error")
        for dtype in (np.float32, np.float64):
            ce = get_loss("cross_entropy")
            v = ce.forward(z.astype(dtype), labels)
            g = ce.backward()
            assert np.isfinite(v) and np.all(np.isfinite(g)) and g.dtype == dtype
            bce = get_loss("binary_cross_entropy")
            y = r.integers(0, 2, z.shape).astype(dtype)
            v = bce.forward(z.astype(dtype), y)
            g = bce.backward()
            assert np.isfinite(v) and np.all(np.isfinite(g)) and g.dtype == dtype
    # float64 values still equal torch's at these magnitudes
    ce = get_loss("cross_entropy")
    ref, ref_g = _torch_loss_and_grad(lambda p, t: F.cross_entropy(p, t), z, torch.tensor(labels))
    _close(ce.forward(z, labels), ref)
    _close(ce.backward(), ref_g)
    bce = get_loss("binary_cross_entropy")
    y = (z > 0).astype(np.float64)
    y[::3] = 1 - y[::3]  # some confidently wrong logits: loss ~ |z|
    ref, ref_g = _torch_loss_and_grad(
        lambda p, t: F.binary_cross_entropy_with_logits(p, torch.tensor(t)), z, y
    )
    _close(bce.forward(z, y), ref)
    _close(bce.backward(), ref_g)


def test_confidently_wrong_cross_entropy_is_large_not_clipped():
    z = np.array([[1000.0, -1000.0]])
    ce = get_loss("cross_entropy")
    assert ce.forward(z, np.array([1])) == pytest.approx(2000.0)
    np.testing.assert_allclose(ce.backward(), [[1.0, -1.0]])


@pytest.mark.parametrize("name", ["mse", "huber", "binary_cross_entropy", "cross_entropy"])
def test_float32_stays_float32(name):
    r, z, labels, _ = _data(10)
    z32 = z.astype(np.float32)
    target = labels if name == "cross_entropy" else r.uniform(0, 1, z.shape)  # float64 target
    loss = get_loss(name)
    v = loss.forward(z32, target)
    assert isinstance(v, float)
    g = loss.backward()
    assert g.dtype == np.float32 and g.shape == z.shape
    v64 = loss.forward(z, target)
    assert v == pytest.approx(v64, rel=1e-5)
    np.testing.assert_allclose(g, loss.backward(), rtol=1e-4, atol=1e-7)


def test_accuracy():
    z = np.array([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 0.0, 5.0], [0.0, 2.0, 1.0]])
    ce = get_loss("cross_entropy")
    assert ce.accuracy(z, np.array([0, 1, 2, 0])) == 0.75
    assert ce.accuracy(z, np.eye(3)[[0, 1, 0, 1]]) == 0.75
    bce = get_loss("binary_cross_entropy")
    assert bce.accuracy(np.array([[2.0], [-1.0], [0.5]]), np.array([1.0, 1.0, 0.0])) == (
        pytest.approx(1 / 3)
    )
    assert get_loss("mse").accuracy(z, z) is None
    assert ce.has_accuracy and bce.has_accuracy and not get_loss("huber").has_accuracy


def test_validation_errors():
    _, z, labels, probs = _data(11, b=4, c=3)
    ce = get_loss("cross_entropy")
    with pytest.raises(ValueError, match=r"\(4, 3\).*\(5,\)|\(5,\).*\(4, 3\)"):
        ce.forward(z, np.array([0, 1, 2, 0, 1]))
    with pytest.raises(ValueError, match="label 3 out of range"):
        ce.forward(z, np.array([0, 1, 3, 0]))
    with pytest.raises(ValueError, match="out of range"):
        ce.forward(z, np.array([0, -1, 2, 0]))
    for dtype in (np.int8, np.int32, np.uint8, np.uint64):  # the one-pass unsigned check
        with pytest.raises(ValueError, match="label 3 out of range"):
            ce.forward(z, np.array([0, 1, 3, 0], dtype=dtype))
        assert np.isfinite(ce.forward(z, np.array([0, 1, 2, 0], dtype=dtype)))
    with pytest.raises(ValueError, match="label -128 out of range"):
        ce.forward(z, np.array([0, -128, 2, 0], dtype=np.int8))
    with pytest.raises(ValueError, match="integers.*1.5"):
        ce.forward(z, np.array([0.0, 1.5, 2.0, 0.0]))
    with pytest.raises(ValueError, match="non-finite"):
        ce.forward(z, np.array([[np.nan, 0.5, 0.5]] * 4))
    with pytest.raises(ValueError, match="shape"):
        ce.forward(z, np.ones((4, 4)) / 4)
    with pytest.raises(ValueError, match="shape"):
        ce.forward(z[0], labels[:1])
    mse = get_loss("mse")
    with pytest.raises(ValueError, match=r"\(4, 3\).*\(3, 4\)"):
        mse.forward(z, z.T)
    with pytest.raises(ValueError, match="non-finite"):
        mse.forward(z, np.where(z > 0, np.nan, z))
    bce = get_loss("binary_cross_entropy")
    with pytest.raises(ValueError, match=r"\[0, 1\].*2"):
        bce.forward(z, np.full(z.shape, 2.0))
    with pytest.raises(RuntimeError, match="before forward"):
        get_loss("huber").backward()
    with pytest.raises(ValueError, match=r"unknown loss 'foo'; expected one of: .*cross_entropy"):
        get_loss("foo")
    with pytest.raises(TypeError, match="'delta'"):
        get_loss("mse", delta=1.0)
    with pytest.raises(ValueError, match="delta"):
        get_loss("huber", delta=-1.0)
    with pytest.raises(ValueError, match="label_smoothing"):
        get_loss("cross_entropy", label_smoothing=1.5)
