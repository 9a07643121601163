"""Round 49 (nphunt49): NumPy engine regressions (unusual but valid arrays, ...)."""

from __future__ import annotations

import numpy as np
import pytest

import depthlab as dl


def _grads(net: dl.Network, x: np.ndarray, g: np.ndarray, **kw) -> list[np.ndarray]:
    """dL/dx and every parameter's gradient after one forward/backward with dL/dy = ``g``."""
    net.forward(x)
    out = [net.backward(g, **kw)]
    return out + [p.grad.copy() for p in net.parameters()]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid"])
@pytest.mark.parametrize("layout", ["fortran", "strided", "fortran_no_copy"])
def test_backward_gives_the_same_bits_for_any_layout_of_the_gradient(dtype, activation, layout):
    """A Fortran-order (or strided) dL/dy of the same values gave parameter gradients 1 ulp
    off the C-order ones (dL/db summed its columns pairwise instead of row by row)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((9, 6)).astype(dtype)
    g = rng.standard_normal((9, 3)).astype(dtype)
    ref = _grads(dl.mlp([6, 8, 8, 3], activation=activation, seed=0, dtype=dtype), x, g)
    if layout == "strided":
        other, kw = np.repeat(g, 2, axis=1)[:, ::2], {}
    else:
        other = np.asfortranarray(g)
        kw = {"copy": False} if layout == "fortran_no_copy" else {}
    assert not other.flags.c_contiguous
    got = _grads(dl.mlp([6, 8, 8, 3], activation=activation, seed=0, dtype=dtype), x, other,
                 **kw)
    for a, b in zip(ref, got):
        assert a.dtype == b.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(other, g)  # the caller's array is left as it was


_LOSSES = [("cross_entropy", {}, "labels"), ("cross_entropy", {"label_smoothing": 0.1}, "labels"),
           ("cross_entropy", {}, "probs"), ("binary_cross_entropy", {}, "binary"),
           ("mse", {}, "real")]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(("name", "kwargs", "kind"), _LOSSES)
@pytest.mark.parametrize("which", ["pred", "target"])
def test_losses_give_the_same_bits_for_any_layout_of_pred_and_target(dtype, name, kwargs, kind,
                                                                     which):
    """A Fortran-order pred (or probability target) gave cross-entropy values and gradients
    1 ulp off the C-order ones (the row sums of the softmax ran down the columns), and
    gradients in Fortran order."""
    rng = np.random.default_rng(0)
    z = rng.standard_normal((37, 19)).astype(dtype)
    target = {"labels": rng.integers(0, 19, 37),
              "probs": rng.dirichlet(np.ones(19), 37).astype(dtype),
              "binary": rng.integers(0, 2, (37, 19)).astype(dtype),
              "real": rng.standard_normal((37, 19)).astype(dtype)}[kind]
    if which == "target" and target.ndim == 1:
        pytest.skip("labels are one column")
    loss = dl.get_loss(name, **kwargs)
    v0 = loss.forward(z, target)
    g0 = loss.backward().copy()
    args = (np.asfortranarray(z), target) if which == "pred" else (z, np.asfortranarray(target))
    v1 = loss.forward(*args)
    g1 = loss.backward()
    assert v1 == v0
    np.testing.assert_array_equal(g1, g0)
    assert g1.dtype == np.dtype(dtype) and g1.flags.c_contiguous


def _layer_pass(layer, x: np.ndarray, g: np.ndarray) -> list[np.ndarray]:
    """The output, dL/dx and every parameter gradient of one training pass of ``layer``."""
    y = layer.forward(x)
    return [y, layer.backward(g)] + [p.grad.copy() for p in layer.parameters()]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kind", ["dense", "batchnorm"])
@pytest.mark.parametrize("fortran", ["x", "grad", "both"])
def test_layers_give_the_same_bits_for_any_layout(dtype, kind, fortran):
    """A Fortran-order input of a BatchNorm gave its output, dL/dx and dL/dgamma 1 ulp off the
    C-order ones (the batch sums ran down contiguous columns); a Fortran-order dL/dy of a
    Dense gave dL/db 1 ulp off."""
    from depthlab.layers import BatchNorm, Dense

    rng = np.random.default_rng(0)
    x = rng.standard_normal((37, 19)).astype(dtype)
    n_out = 23 if kind == "dense" else 19
    g = rng.standard_normal((37, n_out)).astype(dtype)

    def make():
        return Dense(19, 23, dtype=dtype, rng=0) if kind == "dense" else BatchNorm(19, dtype=dtype)

    ref = _layer_pass(make(), x, g)
    xo = np.asfortranarray(x) if fortran in ("x", "both") else x
    go = np.asfortranarray(g) if fortran in ("grad", "both") else g
    for a, b in zip(ref, _layer_pass(make(), xo, go)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_network_starting_with_batchnorm_gives_the_same_bits_for_a_fortran_batch(dtype):
    """``Network.forward`` passed a Fortran-order batch of its own dtype on as it was: a first
    BatchNorm (``from_torch`` of ``BatchNorm1d -> Linear``) then gave outputs 1 ulp off."""
    torch = pytest.importorskip("torch")
    from depthlab.bridge import from_torch

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.BatchNorm1d(19), torch.nn.Linear(19, 3))
    module = module.to(torch.float32 if dtype == "float32" else torch.float64)
    x = np.random.default_rng(0).standard_normal((37, 19)).astype(dtype)
    outs = []
    for batch in (x, np.asfortranarray(x)):
        net = from_torch(module)
        outs.append(net.forward(batch))
    np.testing.assert_array_equal(outs[0], outs[1])


_EPOCH_SCHEDULES = {
    "StepLR": lambda m, o: m.StepLR(o, 3, 0.5),
    "MultiStepLR": lambda m, o: m.MultiStepLR(o, [2, 5, 5, 9], 0.5),
    "ExponentialLR": lambda m, o: m.ExponentialLR(o, 0.9),
    "LinearLR": lambda m, o: m.LinearLR(o, 0.2, 0.9, 7),
    "CosineAnnealingLR": lambda m, o: m.CosineAnnealingLR(o, 6, 1e-3),
    "LambdaLR": lambda m, o: m.LambdaLR(o, lambda e: 1 / (1 + e)),
    "MultiplicativeLR": lambda m, o: m.MultiplicativeLR(o, lambda e: 0.9),
    "ConstantLR": lambda m, o: m.ConstantLR(o, 0.5, 4),
    "PolynomialLR": lambda m, o: m.PolynomialLR(o, 8, 2.0),
    "OneCycleLR": lambda m, o: m.OneCycleLR(o, 0.5, total_steps=20),
    "CyclicLR": lambda m, o: m.CyclicLR(o, 0.01, 0.1, step_size_up=3),
}


@pytest.mark.parametrize("name", sorted(_EPOCH_SCHEDULES))
def test_scheduler_step_with_an_epoch_follows_torch(name):
    """``sched.step(epoch)`` (torch's deprecated form, still accepted by torch) was a
    TypeError ("step() takes 1 positional argument but 2 were given"); it now sets torch's lr
    of that epoch (the closed form), bit for bit, mixed with plain steps."""
    torch = pytest.importorskip("torch")
    import warnings

    from depthlab.optimizers import get_optimizer, schedulers

    make = _EPOCH_SCHEDULES[name]
    rng = np.random.default_rng(0)
    net = dl.mlp([3, 4, 2], seed=0)
    for _ in range(4):
        opt = get_optimizer("sgd", net.parameters(), lr=0.1, momentum=0.9)
        sched = make(schedulers, opt)
        topt = torch.optim.SGD([torch.zeros(2, requires_grad=True)], lr=0.1, momentum=0.9)
        tsched = make(torch.optim.lr_scheduler, topt)
        for _ in range(12):
            epoch = int(rng.integers(0, 19)) if rng.random() < 0.5 else None
            sched.step(epoch)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                tsched.step(epoch)
            assert sched.get_last_lr() == tsched.get_last_lr()
            assert sched.last_epoch == tsched.last_epoch
            assert opt.param_groups[0]["momentum"] == topt.param_groups[0]["momentum"]


@pytest.mark.parametrize("epoch", [-1, 2.5, True, "3"])
def test_scheduler_step_refuses_a_bad_epoch_in_one_line(epoch):
    from depthlab.optimizers import get_optimizer, schedulers

    opt = get_optimizer("sgd", dl.mlp([3, 4, 2], seed=0).parameters(), lr=0.1)
    sched = schedulers.StepLR(opt, 3)
    with pytest.raises((TypeError, ValueError), match=r"epoch.*integer >= 0") as info:
        sched.step(epoch)
    assert "\n" not in str(info.value)
    assert sched.last_epoch == 0 and opt.lr == 0.1
