"""Round 48 (nphunt48): the NumPy engine against torch over long runs, clipping, batch-norm
running statistics, and refusals that name the accepted range."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import depthlab as dl
from depthlab.optimizers import clip_grad_norm_, get_optimizer
from depthlab.optimizers import schedulers as S
from depthlab.parameter import Parameter

torch = pytest.importorskip("torch")


def _sgd():
    return get_optimizer("sgd", [Parameter("p", np.zeros(2))], lr=0.1)


_SCHEDULERS = {
    "LinearLR.start_factor": (lambda o, v: S.LinearLR(o, start_factor=v), "(0.0, 1.0]"),
    "ConstantLR.factor": (lambda o, v: S.ConstantLR(o, factor=v), "(0.0, 1.0]"),
    "OneCycleLR.div_factor": (lambda o, v: S.OneCycleLR(o, max_lr=0.1, total_steps=10,
                                                        div_factor=v), "> 0.0"),
    "OneCycleLR.final_div_factor": (lambda o, v: S.OneCycleLR(
        o, max_lr=0.1, total_steps=10, final_div_factor=v), "> 0.0"),
    "CyclicLR.step_size_up": (lambda o, v: S.CyclicLR(o, base_lr=0.01, max_lr=0.1,
                                                      step_size_up=v), "> 0.0"),
}


@pytest.mark.parametrize("bad", [float("nan"), -0.1, 1.5, 0.0, float("inf")])
@pytest.mark.parametrize("which", list(_SCHEDULERS))
def test_scheduler_refusals_name_the_range_they_accept(which, bad):
    """Settings that must be > 0 were refused with a range that holds the refused 0: LinearLR's
    ``start_factor`` and ConstantLR's ``factor`` (NaN, -0.1, 1.5, inf: "expected a finite
    number in [0.0, 1.0]"), OneCycleLR's ``div_factor``/``final_div_factor`` and CyclicLR's
    ``step_size_up`` (-0.1, NaN: ">= 0.0"; 0 got a line that did not name the value)."""
    build, accepted = _SCHEDULERS[which]
    if accepted == "> 0.0" and bad == 1.5:
        build(_sgd(), bad)  # within range
        return
    with pytest.raises(ValueError) as info:
        build(_sgd(), bad)
    msg = str(info.value)
    name = which.split(".")[1]
    assert f"{name} value: {bad!r};" in msg and accepted in msg and "[0.0" not in msg \
        and ">= 0" not in msg


def test_scheduler_settings_keep_their_accepted_values_and_refuse_text():
    assert S.LinearLR(_sgd(), start_factor=1.0).start_factor == 1.0
    assert S.ConstantLR(_sgd(), factor=1e-9).factor == 1e-9
    s = S.OneCycleLR(_sgd(), max_lr=0.1, total_steps=10, div_factor=1e-3, final_div_factor=2)
    assert s.initial_lrs == [0.1 / 1e-3]
    assert S.CyclicLR(_sgd(), base_lr=0.01, max_lr=0.1, step_size_up=0.5).total_size == 1.0
    with pytest.raises(TypeError, match="start_factor"):
        S.LinearLR(_sgd(), start_factor="0.5")


# -- long float64 runs through fit, step for step with torch ---------------------------------
_TORCH_OPT = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW", "rmsprop": "RMSprop"}


def _torch_steps(tm, opt, kw, x, y, steps, l2, clip):
    topt = getattr(torch.optim, _TORCH_OPT[opt])(tm.parameters(), lr=0.01, **kw)
    lf = torch.nn.CrossEntropyLoss()
    for _ in range(steps):
        topt.zero_grad()
        loss = lf(tm(x), y)
        if l2:
            loss = loss + l2 * sum((m.weight ** 2).sum() for m in tm.modules()
                                   if isinstance(m, torch.nn.Linear))
        loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(tm.parameters(), clip)
        topt.step()


@pytest.mark.parametrize("opt, kw, l2, clip", [
    ("adam", {}, 0.005, None),
    ("adamw", {"weight_decay": 0.1}, 0.0, 0.5),
    ("rmsprop", {"momentum": 0.5, "centered": True}, 0.0, 0.5),
    ("sgd", {"momentum": 0.9, "nesterov": True, "weight_decay": 0.01}, 0.005, 0.5),
])
def test_five_hundred_float64_steps_of_fit_follow_torch(opt, kw, l2, clip):
    """500 full-batch steps of ``fit`` (L2 penalty = torch's ``l2 * sum w^2`` on the Linear
    weights, ``clip_grad_norm`` = ``clip_grad_norm_`` after the penalty) against the torch
    loop on the bridged model: the parameters stay within 1e-10 relative (measured 3e-14 to
    9e-13; drift that grows past that is the trajectory's own sensitivity, which a 1-ulp
    perturbation of torch's weights shows as well)."""
    from depthlab.bridge import to_torch

    rng = np.random.default_rng(0)
    x = rng.normal(size=(23, 5))
    y = rng.integers(0, 3, 23)
    net = dl.mlp([5, 8, 8, 3], "tanh", dtype="float64", seed=3)
    tm = to_torch(net)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dl.fit(net, x, y, optimizer=opt, lr=0.01, max_steps=500, batch_size="full", l2=l2,
               clip_grad_norm=clip, eval_train=False, **kw)
    _torch_steps(tm, opt, kw, torch.tensor(x), torch.tensor(y), 500, l2, clip)
    back = to_torch(net)
    for a, b in zip(back.parameters(), tm.parameters()):
        rel = ((a - b).abs() / b.abs().clamp_min(1e-3)).max().item()
        assert rel < 1e-10


# -- clip_grad_norm_ edge cases ----------------------------------------------------------------
@pytest.mark.parametrize("norm_type", [2.0, "inf", 1.0, 0.5])
@pytest.mark.parametrize("case", ["plain", "zero", "nan", "inf", "huge_limit"])
def test_clip_grad_norm_matches_torch_at_the_edges(norm_type, case):
    rng = np.random.default_rng(1)
    grads = [rng.normal(size=(3, 4)) * 3, rng.normal(size=4)]
    max_norm = 1.0
    if case == "zero":
        grads = [np.zeros((3, 4)), np.zeros(4)]
    elif case == "nan":
        grads[1][0] = np.nan
    elif case == "inf":
        grads[1][0] = -np.inf
    elif case == "huge_limit":
        max_norm = float("inf")
    ps = [Parameter(f"p{i}", np.zeros_like(g)) for i, g in enumerate(grads)]
    ts = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in grads]
    for p, t, g in zip(ps, ts, grads):
        p.grad = g.copy()
        t.grad = torch.tensor(g.copy())
    ours = clip_grad_norm_(ps, max_norm, norm_type)
    theirs = float(torch.nn.utils.clip_grad_norm_(ts, max_norm, norm_type))
    np.testing.assert_allclose(ours, theirs, rtol=1e-14)
    for p, t in zip(ps, ts):
        np.testing.assert_allclose(p.grad, t.grad.numpy(), rtol=1e-14, atol=0)


# -- batch-norm running statistics ---------------------------------------------------------------
@pytest.mark.parametrize("momentum", [0.1, 0.7, None])
def test_batchnorm_running_statistics_and_eval_output_follow_torch(momentum):
    """Unequal batches (2, 3, 7, 11 rows) in training mode: the running mean and the unbiased
    running variance (torch's cumulative average for ``momentum=None``) and the eval-mode
    output equal ``BatchNorm1d``'s."""
    from depthlab.layers import BatchNorm

    rng = np.random.default_rng(2)
    bn = BatchNorm(4, momentum=momentum, ema_start="zero", dtype="float64")
    tbn = torch.nn.BatchNorm1d(4, momentum=momentum).double()
    for m in (2, 3, 7, 11, 5):
        xb = rng.normal(size=(m, 4)) * 3 + 1
        y = bn.forward(xb, training=True)
        ty = tbn(torch.tensor(xb))
        np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(bn.running_mean, tbn.running_mean.numpy(), rtol=1e-14)
    np.testing.assert_allclose(bn.running_var, tbn.running_var.numpy(), rtol=1e-14)
    tbn.eval()
    xe = rng.normal(size=(6, 4))
    np.testing.assert_allclose(bn.forward(xe, training=False),
                               tbn(torch.tensor(xe)).detach().numpy(), rtol=1e-12, atol=1e-13)


# -- mean-field depth scales ---------------------------------------------------------------------
@pytest.mark.parametrize("name, sigma_w2, sigma_b2", [
    ("identity", 1.0, 0.1),   # q_l = q_0 + l sigma_b^2: diverges, chi_q = 1 - 3e-16 by rounding
    ("identity", 1.0, 0.0),   # every q is a fixed point
    ("relu", 2.0, 0.1),
    ("leaky_relu", 2.0 / (1 + 0.01 ** 2), 0.1),
])
def test_length_depth_scale_is_infinite_where_no_finite_q_star_attracts(name, sigma_w2,
                                                                        sigma_b2):
    """``xi_q`` is documented ``inf`` where no attracting finite ``q*`` exists. A linear
    network at sigma_w^2 = 1 with biases (``q* = inf``, ``phase='critical'``, ``xi_c = inf``)
    had ``xi_q = 3.0e15``: ``-1 / ln chi_q`` of a slope rounded to 1 - 3e-16."""
    from depthlab.theory import meanfield

    mf = meanfield(name, sigma_w2, sigma_b2)
    assert mf.phase == "critical" and mf.xi_c == float("inf")
    assert mf.xi_q == float("inf")


def test_length_depth_scale_is_still_finite_at_an_attracting_fixed_point():
    import math

    from depthlab.theory import meanfield

    for name, sw2, sb2 in (("identity", 0.9, 0.1), ("relu", 1.9, 0.1), ("tanh", 1.5, 0.05)):
        mf = meanfield(name, sw2, sb2)
        assert 0 < mf.chi_q < 1 and mf.xi_q == pytest.approx(-1 / math.log(mf.chi_q), rel=1e-14)
