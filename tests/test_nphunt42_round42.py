"""Round 42 (nphunt42): what a user porting torch code reaches for in the NumPy engine.

torch's Softplus, LogSigmoid, Hardtanh, ReLU6, Hardsigmoid and Hardswish, its L1Loss and
SmoothL1Loss, and its OneCycleLR and CyclicLR schedulers, each against torch (float64 to
1e-12, float32 to 1e-6, derivatives also by finite differences). Each test was seen failing on
the code before (the handoff quotes the failures)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

import depthlab as dl
from depthlab.activations import ACTIVATIONS, get_activation
from depthlab.parameter import Parameter

torch = pytest.importorskip("torch")
F = torch.nn.functional

ACTS = [
    ("Softplus", {}, lambda s: F.softplus(s)),
    ("Softplus", {"beta": 2.0, "threshold": 5.0}, lambda s: F.softplus(s, 2.0, 5.0)),
    ("softplus", {"beta": -1.5}, lambda s: F.softplus(s, -1.5, 20.0)),
    ("LogSigmoid", {}, F.logsigmoid),
    ("Hardtanh", {}, F.hardtanh),
    ("hardtanh", {"min_val": -2.0, "max_val": 0.5}, lambda s: F.hardtanh(s, -2.0, 0.5)),
    ("ReLU6", {}, F.relu6),
    ("Hardsigmoid", {}, F.hardsigmoid),
    ("Hardswish", {}, F.hardswish),
]
_KINKS = [-1000, -30, -21, -20, -10, -6, -5, -3, -2.5, -2, -1, -0.5, 0, 0.5, 1, 2, 2.5, 3, 5, 6,
          10, 20, 21, 30, 1000, np.nan]


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 1e-6)])
@pytest.mark.parametrize("name, kwargs, torch_fn", ACTS)
def test_torch_activations_match_torch_forward_and_backward(name, kwargs, torch_fn, dtype,
                                                            tol) -> None:
    """Before: ``get_activation("Softplus")`` was "unknown activation 'Softplus'" (none of
    the six existed). Values and backward match torch's autograd at the kinks (torch's
    conventions: 0 at Hardtanh's ends, Hardswish's 0 at -3 and 1 at 3), in the linear region
    of Softplus, at +-1000 (no overflow) and at NaN."""
    fn = get_activation(name, **kwargs)
    s = np.concatenate([np.random.default_rng(0).normal(0, 4, 300), _KINKS]).astype(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        a = fn.forward(s)
        d = fn.derivative(s, a)
        back = fn.backward(s, a, np.full_like(s, 0.7))
    ts = torch.tensor(s, requires_grad=True)
    ty = torch_fn(ts)
    (tg,) = torch.autograd.grad(ty, ts, torch.full_like(ts, 0.7))
    ty, tg = ty.detach().numpy(), tg.numpy()
    assert a.dtype == d.dtype == back.dtype == dtype
    np.testing.assert_allclose(a, ty, rtol=tol, atol=tol)
    np.testing.assert_allclose(back, tg, rtol=tol, atol=tol)
    assert np.array_equal(np.isnan(a), np.isnan(ty)) and np.array_equal(np.isnan(back),
                                                                         np.isnan(tg))


@pytest.mark.parametrize("name, kwargs, torch_fn", ACTS)
def test_torch_activations_derivative_by_finite_differences(name, kwargs, torch_fn) -> None:
    """f'(s) against central differences (float64) away from the kinks; ``max_derivative``
    bounds |f'| and ``taylor``'s first two coefficients are f(0) and f'(0)."""
    fn = get_activation(name, **kwargs)
    s = np.random.default_rng(1).normal(0, 3, 400)
    kinks = [kwargs.get("min_val", -1.0), kwargs.get("max_val", 1.0), 0.0, 6.0, -3.0, 3.0,
             kwargs.get("threshold", 20.0) / kwargs.get("beta", 1.0)]
    s = s[np.min(np.abs(s[:, None] - np.array(kinks)), axis=1) > 1e-3]
    h = 1e-6
    fd = (fn.forward(s + h) - fn.forward(s - h)) / (2 * h)
    np.testing.assert_allclose(fn.derivative(s, fn.forward(s)), fd, atol=1e-8)
    grid = np.linspace(-40, 40, 40001)
    assert np.abs(fn.derivative(grid, fn.forward(grid))).max() <= fn.max_derivative + 1e-12
    if fn.taylor is not None:
        zero = np.zeros(1)
        assert fn.taylor[0] == pytest.approx(fn.forward(zero)[0], abs=1e-15)
        assert fn.taylor[1] == pytest.approx((fn.forward(zero + h) - fn.forward(zero - h))[0]
                                             / (2 * h), abs=1e-8)


def test_torch_activations_are_found_by_name_but_not_listed() -> None:
    """torch's class names and snake_case find them; ``ACTIVATIONS`` (config choices, the torch
    bridge's list) is unchanged; bad settings are one clear error."""
    for name, want in (("ReLU6", "relu6"), ("LogSigmoid", "logsigmoid"),
                       ("log_sigmoid", "logsigmoid"), ("hard-swish", "hardswish"),
                       ("Hardsigmoid", "hardsigmoid"), ("softplus", "softplus")):
        assert get_activation(name).name == want
        assert want in ACTIVATIONS  # listed since round 42 (listacts42)
    assert dl.activation("Softplus", beta=2.0) == get_activation("softplus", beta=2.0)
    assert get_activation("Hardtanh", min_val=-2.0, max_val=3.0).params == {"min_val": -2.0,
                                                                             "max_val": 3.0}
    with pytest.raises(ValueError, match="max_val must be greater than min_val"):
        get_activation("hardtanh", min_val=1.0, max_val=1.0)
    with pytest.raises(ValueError, match="beta must be non-zero"):
        get_activation("softplus", beta=0)
    with pytest.raises(TypeError, match="unknown argument 'alpha'"):
        get_activation("relu6", alpha=1.0)


def test_a_network_trains_saves_and_loads_with_a_torch_activation(tmp_path) -> None:
    net = dl.mlp([3, 5, 2], activation="Softplus", activation_kwargs={"beta": 2.0,
                                                                      "threshold": 3.0}, seed=0)
    x = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32) * 3
    hist = dl.fit(net, x, np.arange(8) % 2, loss="cross_entropy", optimizer="adam", lr=1e-2,
                  epochs=1)
    assert not hist.diverged and all(math.isfinite(v) for v in hist.step_loss)
    dl.save(net, tmp_path / "n.npz")
    back = dl.load(tmp_path / "n.npz")
    assert np.array_equal(back.forward(x), net.forward(x))


REGRESSION = [
    ("L1Loss", {}, lambda t, y, r: F.l1_loss(t, y, reduction=r)),
    ("SmoothL1Loss", {}, lambda t, y, r: F.smooth_l1_loss(t, y, reduction=r)),
    ("SmoothL1Loss", {"beta": 0.0}, lambda t, y, r: F.smooth_l1_loss(t, y, reduction=r,
                                                                      beta=0.0)),
    ("smooth_l1_loss", {"beta": 0.7}, lambda t, y, r: F.smooth_l1_loss(t, y, reduction=r,
                                                                       beta=0.7)),
    ("HuberLoss", {"delta": 0.6}, lambda t, y, r: F.huber_loss(t, y, reduction=r, delta=0.6)),
]


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 1e-6)])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("name, kwargs, torch_fn", REGRESSION)
def test_l1_and_smooth_l1_losses_match_torch(name, kwargs, torch_fn, reduction, dtype,
                                             tol) -> None:
    """Before: ``dl.loss("L1Loss")`` / ``"SmoothL1Loss"`` were unknown losses. Loss and
    gradient match torch, with d = 0 (torch's gradient 0) and |d| = beta among the elements."""
    rng = np.random.default_rng(2)
    x = rng.normal(0, 2, (7, 3)).astype(dtype)
    y = rng.normal(0, 2, (7, 3)).astype(dtype)
    x[0, 0], x[0, 1] = y[0, 0], y[0, 1] + dtype(0.7)
    loss = dl.loss(name, reduction=reduction, **kwargs)
    value = loss.forward(x, y)
    up = rng.normal(size=x.shape).astype(dtype) if reduction == "none" else None
    grad = loss.backward(up)
    tx = torch.tensor(x, requires_grad=True)
    tv = torch_fn(tx, torch.tensor(y), reduction)
    (tg,) = torch.autograd.grad(tv, tx, None if up is None else torch.tensor(up))
    assert grad.dtype == dtype
    np.testing.assert_allclose(np.asarray(value), tv.detach().numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(grad, tg.numpy(), rtol=tol, atol=tol)


def test_smooth_l1_settings_and_names() -> None:
    assert dl.loss("SmoothL1Loss", beta=0.5).params == {"beta": 0.5}
    assert dl.loss("mae").name == dl.loss("l1").name == "l1_loss"
    assert "l1_loss" not in dl.LOSSES and "smooth_l1_loss" not in dl.LOSSES
    with pytest.raises(ValueError, match="beta must be >= 0"):
        dl.loss("SmoothL1Loss", beta=-1.0)
    with pytest.raises(ValueError, match="differ"):  # (B,) pred against (B, 1): no broadcast
        dl.loss("L1Loss").forward(np.zeros(4), np.zeros((4, 1)))


def test_per_element_takes_the_element_weights() -> None:
    """The mend: ``_per_element(g, grad, w)`` multiplies by the weights once for both BCE
    losses (it took no weight before: a TypeError); their gradients are torch's still."""
    loss = dl.loss("BCEWithLogitsLoss", reduction="sum")
    g = loss._per_element(np.ones(3), None, np.array([1.0, 2.0, 3.0]))
    assert g.tolist() == [1.0, 2.0, 3.0]
    rng = np.random.default_rng(4)
    z, y, w = rng.normal(size=(5, 3)), rng.uniform(size=(5, 3)), rng.uniform(0.1, 2, 3)
    for name, pred, torch_fn in (
            ("BCEWithLogitsLoss", z, F.binary_cross_entropy_with_logits),
            ("BCELoss", 1 / (1 + np.exp(-z)), F.binary_cross_entropy)):
        loss = dl.loss(name, weight=w)
        loss.forward(pred, y)
        tx = torch.tensor(pred, requires_grad=True)
        (tg,) = torch.autograd.grad(torch_fn(tx, torch.tensor(y), weight=torch.tensor(w)), tx)
        np.testing.assert_allclose(loss.backward(), tg.numpy(), rtol=1e-12, atol=1e-15)


# -- schedulers ----------------------------------------------------------------------------

_TORCH_OPT = {"sgd": "SGD", "adam": "Adam", "rmsprop": "RMSprop", "nadam": "NAdam",
              "adagrad": "Adagrad"}


def _pair(name: str, kwargs: dict) -> tuple:
    ours = dl.optimizer(name, [Parameter("w", np.zeros(3))], **kwargs)
    theirs = getattr(torch.optim, _TORCH_OPT[name])([torch.nn.Parameter(torch.zeros(3))],
                                                    **kwargs)
    return ours, theirs


def _momentum(opt, torchy: bool) -> float | None:
    if torchy:
        g = opt.param_groups[0]
        return g["betas"][0] if "betas" in g else g.get("momentum")
    return opt.betas[0] if hasattr(opt, "betas") else getattr(opt, "momentum", None)


def _worst(cls_name: str, opt: str, okw: dict, skw: dict, steps: int) -> float:
    from depthlab import optimizers

    ours, theirs = _pair(opt, okw)
    s = getattr(optimizers, cls_name)(ours, **skw)
    t = getattr(torch.optim.lr_scheduler, cls_name)(theirs, **skw)
    worst = 0.0
    for _ in range(steps):
        for a, b in ((ours.lr, theirs.param_groups[0]["lr"]),
                     (_momentum(ours, False), _momentum(theirs, True))):
            worst = max(worst, abs(a - b) / max(abs(b), 1e-300))
        assert s.get_last_lr() == [ours.lr]
        s.step()
        with warnings.catch_warnings():  # "lr_scheduler.step() before optimizer.step()"
            warnings.simplefilter("ignore", UserWarning)
            t.step()
    return worst


ONE_CYCLE = [
    dict(max_lr=0.5, total_steps=300),
    dict(max_lr=0.5, epochs=6, steps_per_epoch=50, anneal_strategy="linear"),
    dict(max_lr=[0.3], total_steps=300, three_phase=True, pct_start=0.25, div_factor=10.0,
         final_div_factor=100.0),
    dict(max_lr=1.0, total_steps=300, cycle_momentum=False),
    dict(max_lr=0.2, total_steps=300, pct_start=0.0),
    dict(max_lr=0.2, total_steps=300, base_momentum=0.7, max_momentum=0.9, three_phase=True,
         anneal_strategy="linear"),
]


@pytest.mark.parametrize("opt, okw", [("sgd", {"lr": 0.1, "momentum": 0.9}), ("adam", {}),
                                      ("rmsprop", {"momentum": 0.5})])
@pytest.mark.parametrize("skw", ONE_CYCLE)
def test_one_cycle_lr_matches_torch_step_for_step(opt, okw, skw) -> None:
    """Before: ``from depthlab.optimizers import OneCycleLR`` was an ImportError. The lr and
    the momentum (SGD's/RMSprop's ``momentum``, Adam's ``betas[0]``) are torch's at each of
    the 300 steps (the last one, past the schedule, included: torch's negative lr there with
    linear annealing is the one exception, 0)."""
    steps = 300 if skw.get("anneal_strategy") != "linear" else 299
    assert _worst("OneCycleLR", opt, okw, skw, steps) < 1e-12


CYCLIC = [
    dict(base_lr=0.01, max_lr=0.1, step_size_up=20),
    dict(base_lr=0.01, max_lr=0.1, step_size_up=13, step_size_down=31, mode="triangular2"),
    dict(base_lr=0.01, max_lr=0.1, step_size_up=17, mode="exp_range", gamma=0.99),
    dict(base_lr=0.01, max_lr=0.1, step_size_up=10, scale_fn=lambda x: 0.5 * (1 + math.sin(x)),
         scale_mode="iterations"),
    dict(base_lr=0.01, max_lr=0.1, step_size_up=10, scale_fn=lambda c: 1 / c),
    dict(base_lr=0.01, max_lr=0.1, step_size_up=7, cycle_momentum=False),
    dict(base_lr=0.05, max_lr=0.2, step_size_up=5, step_size_down=0),
    dict(base_lr=0.01, max_lr=0.1, step_size_up=7.5, step_size_down=2.5),  # torch: float(...)
]


@pytest.mark.parametrize("opt, okw", [("sgd", {"lr": 0.1, "momentum": 0.9}), ("nadam", {})])
@pytest.mark.parametrize("skw", CYCLIC)
def test_cyclic_lr_matches_torch_step_for_step(opt, okw, skw) -> None:
    """Before: ``from depthlab.optimizers import CyclicLR`` was an ImportError."""
    assert _worst("CyclicLR", opt, okw, skw, 300) < 1e-12


def test_one_cycle_lr_refuses_steps_past_total_and_optimizers_without_momentum() -> None:
    from depthlab.optimizers import CyclicLR, OneCycleLR

    opt, _ = _pair("sgd", {"lr": 0.1, "momentum": 0.9})
    sched = OneCycleLR(opt, max_lr=1.0, total_steps=10)
    for _ in range(10):
        sched.step()
    with pytest.raises(ValueError, match="tried to step 11 times.*total steps is 10"):
        sched.step()
    opt, _ = _pair("adagrad", {})
    for cls, kw in ((OneCycleLR, {"max_lr": 1.0, "total_steps": 10}),
                    (CyclicLR, {"base_lr": 0.1, "max_lr": 1.0})):
        with pytest.raises(ValueError, match="must support momentum or beta1"):
            cls(opt, **kw)
        cls(opt, cycle_momentum=False, **kw)
    with pytest.raises(ValueError, match="total_steps OR"):
        OneCycleLR(opt, max_lr=1.0, cycle_momentum=False)
    with pytest.raises(ValueError, match="phase 1 has no steps"):
        OneCycleLR(opt, max_lr=1.0, total_steps=100, pct_start=0.01, cycle_momentum=False)


@pytest.mark.parametrize("cls_name, kw", [
    ("OneCycleLR", {"max_lr": 0.5, "total_steps": 60}),
    ("CyclicLR", {"base_lr": 0.01, "max_lr": 0.1, "step_size_up": 7, "mode": "triangular2"}),
])
def test_cyclic_schedules_resume_from_state_dicts(cls_name, kw) -> None:
    """Optimizer and scheduler rebuilt, then both state dicts loaded (torch's order): the
    rest of the schedule is the uninterrupted one's."""
    from depthlab import optimizers

    cls = getattr(optimizers, cls_name)
    opt, _ = _pair("adam", {})
    sched = cls(opt, **kw)
    seen = []
    for i in range(50):
        if i == 20:
            opt_sd, sched_sd = opt.state_dict(), sched.state_dict()
        seen.append((opt.lr, opt.betas[0]))
        opt.params[0].grad = np.ones(3)
        opt.step()
        sched.step()
    opt2, _ = _pair("adam", {})
    sched2 = cls(opt2, **kw)
    opt2.load_state_dict(opt_sd)
    sched2.load_state_dict(sched_sd)
    for i in range(20, 50):
        assert (opt2.lr, opt2.betas[0]) == seen[i]
        opt2.params[0].grad = np.ones(3)
        opt2.step()
        sched2.step()


def test_cross_entropy_refuses_an_ignore_index_with_probability_rows() -> None:
    """torch: "ignore_index is not supported for floating point target". depthlab silently
    kept every probability row (loss 1.85 where the user asked rows to be left out)."""
    z = np.random.default_rng(5).normal(size=(4, 3))
    rows = np.full((4, 3), 1 / 3)
    with pytest.raises(ValueError, match="ignore_index=1 applies to integer labels"):
        dl.loss("CrossEntropyLoss", ignore_index=1).forward(z, rows)
    with pytest.raises(RuntimeError, match="ignore_index is not supported"):
        F.cross_entropy(torch.tensor(z), torch.tensor(rows), ignore_index=1)
    for kw in ({}, {"ignore_index": -100}):  # torch's default: accepted by both
        value = dl.loss("CrossEntropyLoss", **kw).forward(z, rows)
        assert value == pytest.approx(F.cross_entropy(torch.tensor(z), torch.tensor(rows),
                                                      **kw).item(), rel=1e-12)
