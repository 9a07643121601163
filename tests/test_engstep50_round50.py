"""The SGD momentum step in one compiled pass (depthlab.kernels.momentum_step): the same bits
as the NumPy steps that define it (``SGD._update``), for every setting of momentum,
dampening, Nesterov, weight decay and maximize, zeros of both signs, inf and NaN, learning
rates changed between steps, and arrays the kernel cannot take (another dtype, a layout that
is not C order), which keep the NumPy steps."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.kernels import load_engine_kernels

from depthlab import accel
from depthlab.optimizers import get_optimizer
from depthlab.parameter import Parameter

pytest.importorskip("numba")

DTYPES = ("float32", "float64")
SETTINGS = [
    dict(momentum=0.9),
    dict(momentum=0.9, nesterov=True),
    dict(momentum=0.8, dampening=0.3),
    dict(momentum=0.9, weight_decay=1e-2),
    dict(momentum=0.9, nesterov=True, weight_decay=1e-2, maximize=True),
    dict(momentum=0.9, maximize=True),
    dict(momentum=0.9, nesterov=True, maximize=True),
    dict(momentum=0.7, dampening=0.1, maximize=True),
    dict(momentum=0.9, dampening=1.0),  # c = 0: b = b mu + 0 d
    dict(momentum=0.9, dampening=1.0, maximize=True),  # c = -0.0: the sign of a zero sum
    dict(momentum=0.5, dampening=-0.5),
]


@pytest.fixture()
def compiled(monkeypatch):
    """The kernels loaded (as a long run has them)."""
    return load_engine_kernels(monkeypatch)


def _same_bits(a: np.ndarray, b: np.ndarray) -> None:
    """Equal entries, NaN where NaN, and the same sign of every zero (a NaN's sign bit is not
    compared, as in test_enginefuse31_round31)."""
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(a, b)
    num = ~np.isnan(a)
    assert np.array_equal(np.signbit(a[num]), np.signbit(b[num]))


def _nasty(rng, shape, dtype, special: bool = True) -> np.ndarray:
    """Random entries; with ``special`` zeros of both signs, large values, inf and NaN."""
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    if special:
        flat = x.reshape(-1)
        special_values = [0.0, -0.0, np.inf, -np.inf, np.nan, 1e30, -1e-30, 1e-30]
        flat[:len(special_values)] = special_values[:flat.size]
        rng.shuffle(flat)
    return x


def _params(dtype, special: bool) -> list[Parameter]:
    rng = np.random.default_rng(5)
    shapes = [(7, 5), (5,), (3, 4, 2), (1,), (64, 33)]
    ps = []
    for i, shape in enumerate(shapes):
        value = _nasty(rng, shape, dtype, special)
        if special:
            flat = value.reshape(-1)  # zeros whose sign a zero step decides
            flat[:3] = [0.0, -0.0, -0.0][:flat.size]
        ps.append(Parameter(f"p{i}", value))
    return ps


def _train(kw: dict, dtype: str, numpy_path: bool, special: bool, steps: int = 5,
           lrs=(0.1,)) -> list[np.ndarray]:
    ps = _params(dtype, special)
    opt = get_optimizer("sgd", ps, lr=lrs[0], **kw)
    rng = np.random.default_rng(9)
    ctx = accel.numpy_only() if numpy_path else _Nothing()
    with ctx:
        for step in range(steps):
            opt.lr = lrs[step % len(lrs)]
            for p in ps:
                g = _nasty(rng, p.value.shape, dtype, special and step == 2)
                if special:
                    flat = g.reshape(-1)
                    flat[:2] = [0.0, -0.0][:flat.size]
                p.grad[...] = g
            opt.step()
    out = [p.value.copy() for p in ps]
    out += [opt.state[p]["momentum_buffer"].copy() for p in ps]
    return out


class _Nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kw", SETTINGS, ids=lambda kw: ",".join(f"{k}={v}" for k, v in
                                                              kw.items()))
@pytest.mark.parametrize("special", [False, True])
def test_momentum_step_gives_the_numpy_steps_bits(compiled, dtype, kw, special):
    """Five SGD steps with momentum: parameters and momentum buffers bit for bit those of the
    NumPy steps (the definition), with finite values and with +-0, +-inf and NaN."""
    for a, b in zip(_train(kw, dtype, True, special), _train(kw, dtype, False, special)):
        _same_bits(a, b)


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_learning_rate_changed_between_steps_is_used(compiled, dtype):
    """A scheduler's new ``lr`` at each step (the compiled step's coefficients are cached per
    setting): the same bits as the NumPy steps, and not those of a constant rate."""
    kw = dict(momentum=0.9, nesterov=True)
    lrs = (0.1, 0.01, 0.0, -0.0, 0.3)
    new = _train(kw, dtype, False, False, steps=10, lrs=lrs)
    for a, b in zip(_train(kw, dtype, True, False, steps=10, lrs=lrs), new):
        _same_bits(a, b)
    constant = _train(kw, dtype, False, False, steps=10)
    assert not all(np.array_equal(a, b) for a, b in zip(new, constant))


def test_the_momentum_step_runs_as_one_compiled_pass(compiled, monkeypatch):
    """With the kernels loaded, each momentum step after the first is one call of
    ``kernels.momentum_step`` per parameter (the NumPy steps were three passes: ``b *= mu``,
    ``b += d``, ``w -= lr b``). Failed on the code before: no such kernel."""
    calls = []
    real = compiled.momentum_step
    monkeypatch.setattr(compiled, "momentum_step",
                        lambda *args: calls.append(args[0].shape) or real(*args))
    ps = _params("float32", False)
    opt = get_optimizer("sgd", ps, lr=0.1, momentum=0.9)
    for _ in range(3):
        opt.step()
    assert len(calls) == 2 * len(ps)  # the first step makes the buffers (b = d)


def test_arrays_the_kernel_cannot_take_keep_the_numpy_steps(compiled):
    """A float32 parameter's gradient of another dtype or in Fortran order, and a float16
    parameter: the NumPy steps, with their bits (compared with the NumPy path)."""
    def run(numpy_path: bool) -> list[np.ndarray]:
        rng = np.random.default_rng(3)
        ps = [Parameter("a", rng.standard_normal((6, 4)).astype(np.float32)),
              Parameter("b", rng.standard_normal((6, 4)).astype(np.float32)),
              Parameter("c", rng.standard_normal((5, 3)).astype(np.float16))]
        opt = get_optimizer("sgd", ps, lr=0.1, momentum=0.9, nesterov=True)
        with accel.numpy_only() if numpy_path else _Nothing():
            for _ in range(4):
                ps[0].grad = rng.standard_normal((6, 4))  # float64 gradient of a float32 value
                ps[1].grad = np.asfortranarray(rng.standard_normal((6, 4)).astype(np.float32))
                ps[2].grad = rng.standard_normal((5, 3)).astype(np.float16)
                opt.step()
        return [p.value for p in ps] + [opt.state[p]["momentum_buffer"] for p in ps]

    for a, b in zip(run(True), run(False)):
        _same_bits(a, b)


def test_warm_up_compiles_the_momentum_step(compiled):
    """``accel.warm_up`` loads the momentum step for float32 and float64 (1-D and 2-D, with
    read-only coefficients, as SGD passes them): the first step of a run compiles nothing."""
    import numba

    accel.warm_up()
    sigs = set(compiled.momentum_step.signatures)
    for dt in DTYPES:
        coef = np.zeros(3, dtype=dt)
        coef.flags.writeable = False
        for shape in ((2, 3), (3,)):
            arr = numba.typeof(np.zeros(shape, dtype=dt))
            assert (arr, arr, arr, numba.typeof(coef), numba.boolean) in sigs, sigs


@pytest.mark.parametrize("nesterov", [False, True])
def test_a_gradient_that_is_the_momentum_buffer_keeps_the_numpy_reading(compiled, nesterov):
    """``p.grad`` set to the momentum buffer itself: the NumPy steps (``b *= mu`` scales the
    gradient too, then ``b += d`` doubles it: ``2 mu b``), not the one-pass kernel's
    ``b mu + b`` (which read each entry of ``d`` before writing it)."""
    def run(numpy_path: bool) -> list[np.ndarray]:
        ps = _params("float64", False)
        opt = get_optimizer("sgd", ps, lr=0.1, momentum=0.9, nesterov=nesterov)
        for p in ps:
            p.grad[...] = np.linspace(-1.0, 2.0, p.value.size).reshape(p.value.shape)
        with accel.numpy_only() if numpy_path else _Nothing():
            opt.step()
            for _ in range(3):
                for p in ps:
                    p.grad = opt.state[p]["momentum_buffer"]
                opt.step()
        return [p.value for p in ps] + [opt.state[p]["momentum_buffer"] for p in ps]

    for a, b in zip(run(True), run(False)):
        _same_bits(a, b)


def _ce_reference(z: np.ndarray, y: np.ndarray, ignore: int) -> float:
    """Mean over the rows not labelled ``ignore`` of -log softmax(z)[y] (float64)."""
    z = z.astype(np.float64)
    logp = z - z.max(axis=1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(axis=1, keepdims=True))
    keep = y != ignore
    return float(-logp[np.arange(len(y))[keep], y[keep]].mean())


@pytest.mark.parametrize("labels", [np.array([0, 2, 1, 2, 3]), np.array([0, 2, 1, 2, 3],
                                                                       dtype=np.uint8)])
def test_cross_entropy_skips_the_ignored_pass_only_when_no_label_can_be_ignored(labels,
                                                                                monkeypatch):
    """Labels all in 0..C-1 with the default ignore_index (-100): no ``_ignored`` pass (it
    read ``y == ignore_index`` again after the bounds check proved no row matches; the code
    before made it at every step). An ignore_index inside 0..C-1 that labels use, and a
    float label array, still leave their rows out / are still read."""
    from depthlab.losses import CrossEntropy

    z = np.random.default_rng(4).standard_normal((5, 4))
    calls = []
    real = CrossEntropy._ignored
    monkeypatch.setattr(CrossEntropy, "_ignored",
                        lambda self, y: calls.append(1) or real(self, y))
    loss = CrossEntropy()
    assert loss.forward(z, labels) == pytest.approx(_ce_reference(z, labels, -100), rel=1e-12)
    assert calls == []
    grad = loss.backward()
    expect = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    expect[np.arange(5), labels] -= 1
    np.testing.assert_allclose(grad, expect / 5, rtol=1e-12)

    two = CrossEntropy(ignore_index=2)  # rows 1 and 3 left out
    assert two.forward(z, labels) == pytest.approx(_ce_reference(z, labels, 2), rel=1e-12)
    assert calls  # read, and found
    g = two.backward()
    assert not g[[1, 3]].any()

    calls.clear()
    floats = labels.astype(np.float64)
    assert loss.forward(z, floats) == pytest.approx(_ce_reference(z, labels, -100), rel=1e-12)
    assert calls  # float labels: bounds read by min/max, the pass is kept
