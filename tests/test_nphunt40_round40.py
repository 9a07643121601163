"""nphunt40 (round 40): the NumPy engine against torch on configurations not tried before."""

from __future__ import annotations

import numpy as np
import pytest

import depthlab as dl


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_cross_entropy_ignore_index_matches_torch(dtype: str) -> None:
    """``cross_entropy(ignore_index=)`` (torch's, default -100): rows whose label is the
    ignored index add nothing and get a zero gradient; the mean divides by the kept rows
    (or their class weights' sum), also for the label-smoothing term. Was "unknown argument
    'ignore_index'" and "label -100 out of range"."""
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    rng = np.random.default_rng(0)
    z = (rng.normal(size=(7, 4)) * 3).astype(dtype)
    tol = 1e-12 if dtype == "float64" else 2e-6
    w = rng.random(4) + 0.2
    for ignore, labels in ((-100, [0, -100, 3, 2, -100, 1, 1]), (2, [0, 2, 3, 2, 2, 1, 1]),
                           (-1, [-1, -1, -1, -1, -1, -1, -1])):
        y = np.array(labels)
        for weight in (None, w):
            for smoothing in (0.0, 0.2):
                for reduction in ("mean", "sum", "none"):
                    kw = {"label_smoothing": smoothing, "reduction": reduction}
                    if ignore != -100:
                        kw["ignore_index"] = ignore
                    loss = dl.loss("cross_entropy", **kw,
                                   **({} if weight is None else {"weight": weight}))
                    value = np.asarray(loss.forward(z, y))
                    grad = loss.backward()
                    tz = torch.tensor(z, requires_grad=True)
                    tw = None if weight is None else torch.tensor(weight, dtype=tz.dtype)
                    tv = F.cross_entropy(tz, torch.tensor(y), weight=tw, ignore_index=ignore,
                                         label_smoothing=smoothing, reduction=reduction)
                    tv.sum().backward()
                    what = f"{ignore} {weight is not None} {smoothing} {reduction}"
                    np.testing.assert_allclose(value, tv.detach().numpy(), rtol=tol, atol=tol,
                                               err_msg=what)
                    np.testing.assert_allclose(grad, tz.grad.numpy(), rtol=tol, atol=tol,
                                               err_msg=what)


def _grads(dtype: str, seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=s).astype(dtype) * 3 for s in ((4, 3), (3,), (), (2, 5))]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_clip_grad_norm_and_value_match_torch(dtype: str) -> None:
    """``clip_grad_norm_`` / ``clip_grad_value_`` (torch.nn.utils' names and rules): the total
    norm of all gradients (p = 2, 1, 3, inf), scaled by min(1, max_norm / (norm + 1e-6));
    the value clamp. Was "ImportError: cannot import name 'clip_grad_norm_'"."""
    torch = pytest.importorskip("torch")
    from depthlab.optimizers import clip_grad_norm_, clip_grad_value_
    from depthlab.parameter import Parameter

    tol = 1e-12 if dtype == "float64" else 1e-6
    for norm_type in (2.0, 1, 3.0, float("inf"), "inf"):
        for max_norm in (0.5, 1e6):
            grads = _grads(dtype)
            params = [Parameter(f"p{i}", np.zeros_like(g)) for i, g in enumerate(grads)]
            for p, g in zip(params, grads):
                p.grad = g.copy()
            tensors = [torch.zeros(g.shape, dtype=getattr(torch, dtype), requires_grad=True)
                       for g in grads]
            for t, g in zip(tensors, grads):
                t.grad = torch.tensor(g)
            total = clip_grad_norm_(params, max_norm, norm_type=norm_type)
            t_total = torch.nn.utils.clip_grad_norm_(tensors, max_norm, norm_type=norm_type)
            assert isinstance(total, float)
            np.testing.assert_allclose(total, t_total.item(), rtol=tol)
            for p, t in zip(params, tensors):
                assert p.grad.dtype == np.dtype(dtype)
                np.testing.assert_allclose(p.grad, t.grad.numpy(), rtol=tol, atol=tol)
    grads = _grads(dtype)
    params = [Parameter(f"p{i}", np.zeros_like(g)) for i, g in enumerate(grads)]
    for p, g in zip(params, grads):
        p.grad = g.copy()
    clip_grad_value_(params, 1.5)
    for p, g in zip(params, grads):
        np.testing.assert_array_equal(p.grad, torch.clamp(torch.tensor(g), -1.5, 1.5).numpy())


def test_clip_grad_norm_bad_input_is_one_line() -> None:
    """Bad arguments are one TypeError/ValueError naming the value; a non-finite norm with
    ``error_if_nonfinite=True`` is torch's RuntimeError, with nothing scaled."""
    from depthlab.optimizers import clip_grad_norm_, clip_grad_value_
    from depthlab.parameter import Parameter

    p = Parameter("w", np.zeros(3))
    p.grad = np.array([1.0, np.inf, 2.0])
    with pytest.raises(RuntimeError, match="non-finite"):
        clip_grad_norm_([p], 1.0, error_if_nonfinite=True)
    np.testing.assert_array_equal(p.grad, [1.0, np.inf, 2.0])
    with pytest.raises(ValueError, match="max_norm"):
        clip_grad_norm_([p], -1.0)
    with pytest.raises(TypeError, match="norm_type"):
        clip_grad_norm_([p], 1.0, norm_type="two")
    with pytest.raises(TypeError, match="clip_value"):
        clip_grad_value_([p], "1")
    with pytest.raises(TypeError, match="Parameter"):
        clip_grad_norm_([np.zeros(3)], 1.0)
    assert clip_grad_norm_([], 1.0) == 0.0


def test_kaiming_nonlinearity_matches_torch_gain() -> None:
    """``he_*``/``kaiming_*`` take torch's ``nonlinearity`` (default "leaky_relu" with
    ``negative_slope`` its ``a``): std = calculate_gain(nonlinearity, a) / sqrt(fan). Was
    "unknown argument 'nonlinearity' for initializer 'he_normal'"."""
    torch = pytest.importorskip("torch")
    from depthlab.initializers import calculate_gain

    for nonlinearity in ("relu", "leaky_relu", "tanh", "linear", "sigmoid", "selu"):
        for a in (0.0, 0.2):
            for mode in ("fan_in", "fan_out"):
                gain = torch.nn.init.calculate_gain(nonlinearity, a)
                fan = 30 if mode == "fan_in" else 20
                normal = dl.initializer("kaiming_normal", mode=mode, negative_slope=a,
                                        nonlinearity=nonlinearity)
                uniform = dl.initializer("kaiming_uniform", mode=mode, negative_slope=a,
                                         nonlinearity=nonlinearity)
                assert normal.variance(30, 20) == pytest.approx(gain**2 / fan, rel=1e-14)
                assert uniform.limit(30, 20) == pytest.approx(gain * np.sqrt(3 / fan),
                                                              rel=1e-14)
                assert calculate_gain(nonlinearity, a) == pytest.approx(gain, rel=1e-15)
    assert dl.initializer("he_normal").variance(8, 3) == 2 / 8  # the default, exactly
    with pytest.raises(ValueError, match="no gain for nonlinearity 'gelu'"):
        dl.initializer("he_normal", nonlinearity="gelu")


def test_initializer_arguments_are_shown_and_not_called_the_same() -> None:
    """A Glorot ``gain`` or a He ``negative_slope`` is the initializer's own setting: its repr
    names it (was ``he_normal(scale=1.923..., mode='fan_in', distribution='normal')``, which
    ``he_normal`` does not take) and ``RunSpec.to_toml`` no longer says the default-argument
    config name is "the same initializer" (its weights would differ)."""
    from depthlab.spec import _object_spelling

    he = dl.initializer("he_normal", negative_slope=0.2)
    assert repr(he) == "he_normal(mode='fan_in', negative_slope=0.2, nonlinearity='leaky_relu')"
    assert repr(dl.initializer("glorot_uniform", gain=2.0)) == "glorot_uniform(gain=2.0)"
    assert repr(dl.initializer("lecun_normal")) == "lecun_normal()"
    for init in (he, dl.initializer("glorot_uniform", gain=2.0),
                 dl.initializer("kaiming_uniform", nonlinearity="tanh")):
        assert "the same initializer" not in _object_spelling("init", init), init
    assert "the same initializer" in _object_spelling("init", dl.initializer("he_uniform"))


@pytest.mark.parametrize("clip", [{"clip_grad_norm": 0.05}, {"clip_grad_value": 0.01}])
def test_fit_clips_gradients_as_a_torch_loop(clip: dict) -> None:
    """``dl.fit(..., clip_grad_norm=c)`` (or ``clip_grad_value=c``) clips every step's
    gradient, penalty included, before the update, as a torch loop calling
    ``torch.nn.utils.clip_grad_norm_`` between ``backward`` and ``step``: 6 full-batch SGD
    momentum steps with weight decay give the same weights. Was "unknown argument
    'clip_grad_norm' for optimizer 'sgd'"."""
    torch = pytest.importorskip("torch")
    from depthlab.bridge import to_torch

    rng = np.random.default_rng(3)
    x = rng.normal(size=(16, 5))
    y = rng.integers(0, 3, 16)
    net = dl.mlp([5, 7, 7, 3], "tanh", dtype="float64", seed=1, batchnorm=True)
    model = to_torch(net)
    dl.fit(net, x, y, optimizer="sgd", lr=0.5, momentum=0.9, weight_decay=0.01,
           batch_size="full", epochs=6, **clip)
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9, weight_decay=0.01)
    tx, ty = torch.tensor(x), torch.tensor(y)
    for _ in range(6):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(tx), ty).backward()
        if "clip_grad_norm" in clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip["clip_grad_norm"])
        else:
            torch.nn.utils.clip_grad_value_(model.parameters(), clip["clip_grad_value"])
        opt.step()
    ours = [p.value for p in net.parameters()]
    theirs = [p.detach().numpy() for p in model.parameters()]
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a.T if a.ndim == 2 else a, b, rtol=1e-10, atol=1e-12)


def test_lr_schedulers_match_torch_step_for_step() -> None:
    """``depthlab.optimizers`` StepLR, MultiStepLR, ExponentialLR, LinearLR,
    CosineAnnealingLR and LambdaLR set the optimizer's lr as torch's schedulers do, bit for
    bit, over 25 epochs (CosineAnnealingLR past T_max, where torch's recursion rises again),
    and SGD with momentum under a schedule keeps torch's weights. Was "ImportError: cannot
    import name 'StepLR'"."""
    torch = pytest.importorskip("torch")
    from depthlab import optimizers as O
    from depthlab.parameter import Parameter

    cases = [("StepLR", {"step_size": 3, "gamma": 0.5}),
             ("MultiStepLR", {"milestones": [2, 5, 5, 9], "gamma": 0.3}),
             ("ExponentialLR", {"gamma": 0.9}),
             ("LinearLR", {"start_factor": 0.25, "end_factor": 1.0, "total_iters": 7}),
             ("LinearLR", {"start_factor": 1.0, "end_factor": 0.1, "total_iters": 4}),
             ("CosineAnnealingLR", {"T_max": 6, "eta_min": 0.01}),
             ("CosineAnnealingLR", {"T_max": 10}),
             ("LambdaLR", {"lr_lambda": lambda e: 1.0 / (1 + e)})]
    rng = np.random.default_rng(0)
    for name, kw in cases:
        w0 = rng.normal(size=(3, 2))
        p = Parameter("w", w0.copy())
        t = torch.tensor(w0.copy(), requires_grad=True)
        opt = dl.optimizer("sgd", [p], lr=0.1, momentum=0.9)
        t_opt = torch.optim.SGD([t], lr=0.1, momentum=0.9)
        sched = getattr(O, name)(opt, **kw)
        t_sched = getattr(torch.optim.lr_scheduler, name)(t_opt, **kw)
        for epoch in range(25):
            assert sched.get_last_lr() == t_sched.get_last_lr(), (name, kw, epoch)
            g = rng.normal(size=(3, 2))
            p.grad = g.copy()
            t.grad = torch.tensor(g)
            opt.step()
            t_opt.step()
            sched.step()
            t_sched.step()
        np.testing.assert_allclose(p.value, t.detach().numpy(), rtol=1e-13, atol=1e-15)
    with pytest.raises(TypeError, match="step_size"):
        O.StepLR(dl.optimizer("sgd", [Parameter("w", np.zeros(2))], lr=0.1), step_size=1.5)
    with pytest.raises(TypeError, match="depthlab optimizer"):
        O.ExponentialLR(torch.optim.SGD([t], lr=0.1), gamma=0.9)


def test_torch_name_of_the_logit_bce_is_known() -> None:
    """``binary_cross_entropy`` is torch's ``BCEWithLogitsLoss`` /
    ``binary_cross_entropy_with_logits``; those names were "unknown loss
    'BCEWithLogitsLoss'" while ``BCELoss`` (torch's loss on probabilities) was taken."""
    for name in ("BCEWithLogitsLoss", "binary_cross_entropy_with_logits", "bce_with_logits"):
        assert isinstance(dl.loss(name), dl.losses.BinaryCrossEntropy), name


def test_param_groups_set_hyperparameters_as_in_torch() -> None:
    """``opt.param_groups`` (torch's): one group whose ``"lr"``, ``"momentum"``, ... read and
    set the optimizer's hyperparameters (checked as ``opt.lr = ...``), so a torch loop that
    decays ``g["lr"]`` keeps torch's weights. Was "AttributeError: 'SGD' object has no
    attribute 'param_groups'"."""
    torch = pytest.importorskip("torch")
    from depthlab.parameter import Parameter

    rng = np.random.default_rng(5)
    w0 = rng.normal(size=(4, 2))
    p = Parameter("w", w0.copy())
    t = torch.tensor(w0.copy(), requires_grad=True)
    opt = dl.optimizer("sgd", [p], lr=0.1, momentum=0.9, weight_decay=0.01)
    t_opt = torch.optim.SGD([t], lr=0.1, momentum=0.9, weight_decay=0.01)
    for step in range(8):
        for o in (opt, t_opt):
            for g in o.param_groups:
                g["lr"] *= 0.8
                if step == 4:
                    g["momentum"] = 0.5
        grad = rng.normal(size=(4, 2))
        p.grad, t.grad = grad.copy(), torch.tensor(grad)
        opt.step()
        t_opt.step()
    np.testing.assert_allclose(p.value, t.detach().numpy(), rtol=1e-14, atol=1e-15)
    group = opt.param_groups[0]
    assert group["params"] == [p] and group["lr"] == opt.lr and set(group) >= {"lr", "nesterov"}
    with pytest.raises(ValueError, match="lr"):
        group["lr"] = -1.0
    with pytest.raises(KeyError, match="betas"):
        group["betas"] = (0.9, 0.99)


def test_batchnorm_and_dropout_take_lists_as_dense_does() -> None:
    """A standalone ``BatchNorm``/``Dropout``/``AlphaDropout`` given nested lists computes as
    on the array (``Dense`` and ``Activation`` already did); it was "AttributeError: 'list'
    object has no attribute 'ndim'" / "... 'shape'". Text is one TypeError naming it."""
    from depthlab.layers import AlphaDropout, BatchNorm, Dropout

    rows = [[1.0, 2.0, 3.0], [4.0, 6.0, 5.0]]
    x = np.array(rows)
    for make in (lambda: BatchNorm(3, dtype="float64"), lambda: Dropout(0.5, rng=0),
                 lambda: AlphaDropout(0.3, rng=0)):
        a, b = make(), make()
        for training in (True, False):
            np.testing.assert_array_equal(a.forward(rows, training=training),
                                          b.forward(x, training=training))
        with pytest.raises(TypeError, match="numbers"):
            make().forward([["a", "b", "c"], ["d", "e", "f"]])


def test_reduce_lr_on_plateau_matches_torch() -> None:
    """``depthlab.optimizers.ReduceLROnPlateau`` lowers the lr at the epochs torch's does
    (min/max, rel/abs thresholds, cooldown, min_lr) on one metric sequence with plateaus."""
    torch = pytest.importorskip("torch")
    from depthlab import optimizers as O
    from depthlab.parameter import Parameter

    metrics = [1.0, 0.9, 0.9, 0.95, 0.9, 0.89995, 0.91, 0.5, 0.5, 0.5, 0.5, 0.6, 0.7, 0.4,
               0.4, 0.4, 0.4, 0.4, float("nan"), 0.4, 0.4, 0.4]
    t = torch.zeros(2, requires_grad=True)
    for kw in ({}, {"patience": 1, "factor": 0.5}, {"mode": "max", "patience": 2},
               {"threshold_mode": "abs", "threshold": 0.05, "patience": 0, "cooldown": 2},
               {"patience": 0, "factor": 0.1, "min_lr": 0.002}):
        opt = dl.optimizer("sgd", [Parameter("w", np.zeros(2))], lr=0.1)
        t_opt = torch.optim.SGD([t], lr=0.1)
        ours = O.ReduceLROnPlateau(opt, **kw)
        theirs = torch.optim.lr_scheduler.ReduceLROnPlateau(t_opt, **kw)
        for m in metrics:
            ours.step(m)
            theirs.step(m)
            assert ours.get_last_lr() == theirs.get_last_lr(), (kw, m)


def test_zero_grad_takes_torchs_set_to_none() -> None:
    """``opt.zero_grad(set_to_none=True)`` (torch's keyword) leaves ``.grad`` None, which the
    next ``net.backward`` fills; ``False`` (depthlab's default) zeros. Was "TypeError:
    zero_grad() got an unexpected keyword argument 'set_to_none'"."""
    net = dl.mlp([3, 4, 2], seed=0)
    opt = dl.optimizer("sgd", net.parameters(), lr=0.1)
    x, y = np.ones((2, 3), dtype=np.float32), np.array([0, 1])
    loss = dl.loss("cross_entropy")
    opt.zero_grad(set_to_none=True)
    assert all(p.grad is None for p in net.parameters())
    loss.forward(net.forward(x), y)
    net.backward(loss.backward())
    assert all(p.grad.shape == p.value.shape for p in net.parameters())
    opt.step()
    opt.zero_grad(set_to_none=False)
    assert all(not p.grad.any() for p in net.parameters())
    with pytest.raises(TypeError, match="set_to_none"):
        opt.zero_grad(set_to_none="yes")
