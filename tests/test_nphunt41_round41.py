"""Round 41 (nphunt41): the NumPy engine's public API against PyTorch.

Each test was seen failing on the code before its fix (the handoff quotes the failure)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import depthlab as dl


def _bce_inputs(dtype: type, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities with torch's awkward ends (0, 1, 1 - tiny, a subnormal) and soft targets."""
    x = rng.uniform(0, 1, (6, 3)).astype(dtype)
    x[0, 0], x[1, 1] = 0, 1
    x[2, 2] = dtype(1 - (1e-9 if dtype == np.float64 else 1e-7))
    x[3, 0] = 1e-300 if dtype == np.float64 else np.float32(1e-40)
    y = rng.uniform(0, 1, (6, 3))
    y[0, 0], y[1, 1] = 1, 0
    y[4] = y[4] > 0.5
    return x, y


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_bce_loss_is_torchs_loss_on_probabilities(dtype, reduction) -> None:
    """``dl.loss("BCELoss")`` was the logit loss (BCEWithLogitsLoss): on a sigmoid's
    probabilities it gave other numbers than torch's BCELoss (log clamped at -100, gradient
    (x - y) / max(x (1 - x), 1e-12)); sklearn's ``log_loss`` likewise."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x, y = _bce_inputs(dtype, rng)
    tol = 1e-12 if dtype == np.float64 else 2e-6
    for weight in (None, rng.uniform(0, 2, 3)):
        loss = dl.loss("BCELoss", reduction=reduction,
                       **({} if weight is None else {"weight": weight}))
        assert isinstance(loss, dl.losses.BCELoss) and loss.name == "bce_loss"
        up = rng.normal(size=x.shape)
        value = loss.forward(x, y)
        grad = loss.backward(up if reduction == "none" else None)
        tx = torch.tensor(x, requires_grad=True)
        tw = None if weight is None else torch.tensor(weight, dtype=tx.dtype)
        tl = torch.nn.BCELoss(weight=tw, reduction=reduction)(tx, torch.tensor(y, dtype=tx.dtype))
        (tl if reduction != "none" else (tl * torch.tensor(up, dtype=tx.dtype)).sum()).backward()
        want = tl.detach().numpy()
        np.testing.assert_allclose(value, want, rtol=tol, atol=tol)
        tg = tx.grad.numpy()
        assert grad.dtype == dtype and np.all(np.abs(grad - tg) <= tol * np.maximum(1, abs(tg)))
    assert isinstance(dl.loss("log_loss"), dl.losses.BCELoss)


def test_bce_loss_gradient_is_the_derivative_and_refuses_logits() -> None:
    x = np.random.default_rng(1).uniform(0.05, 0.95, (4, 2))
    y = np.array([[1.0, 0.0], [0.3, 0.9], [0.0, 0.0], [1.0, 1.0]])
    loss = dl.losses.BCELoss()
    loss.forward(x, y)
    grad = loss.backward()
    h = 1e-6
    for i in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[i] = h
        fd = (loss.forward(x + e, y) - loss.forward(x - e, y)) / (2 * h)
        assert abs(fd - grad[i]) <= 1e-7 * max(1.0, abs(fd))
    with pytest.raises(ValueError, match=r"^bce_loss \(torch's BCELoss\) takes probabilities in "
                                         r"\[0, 1\], got 1\.5; for logits use "
                                         r"loss='binary_cross_entropy'"):
        loss.forward(np.where(x > 0.5, 1.5, x), y)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_nll_loss_is_torchs_loss_on_log_probabilities(dtype, reduction) -> None:
    """``"nll"`` was cross_entropy on logits (a second log-softmax): torch's NLLLoss reads
    log-probabilities, -w[y] x[y] over the weights' sum; ``NLLLoss`` was an unknown loss."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    z = rng.normal(size=(7, 4))
    logp = (z - np.log(np.exp(z).sum(axis=1, keepdims=True))).astype(dtype)
    logp[0, 1] = -np.inf  # a zero probability of a class not picked
    labels = rng.integers(0, 4, 7)
    labels[0], labels[2] = 0, -100
    tol = 1e-12 if dtype == np.float64 else 2e-6
    for name in ("NLLLoss", "nll"):
        for weight in (None, rng.uniform(0, 2, 4)):
            for ignore in (-100, 3):
                y = labels if ignore == -100 else np.where(labels == -100, 1, labels)
                kw = {} if weight is None else {"weight": weight}
                loss = dl.loss(name, reduction=reduction, ignore_index=ignore, **kw)
                up = rng.normal(size=7)
                value = loss.forward(logp, y)
                grad = loss.backward(up if reduction == "none" else None)
                tx = torch.tensor(logp, requires_grad=True)
                tw = None if weight is None else torch.tensor(weight, dtype=tx.dtype)
                tl = torch.nn.NLLLoss(weight=tw, ignore_index=ignore,
                                      reduction=reduction)(tx, torch.tensor(y))
                (tl if reduction != "none"
                 else (tl * torch.tensor(up, dtype=tx.dtype)).sum()).backward()
                np.testing.assert_allclose(value, tl.detach().numpy(), rtol=tol, atol=tol)
                assert grad.dtype == dtype
                np.testing.assert_allclose(grad, tx.grad.numpy(), rtol=tol, atol=tol)


def test_probability_losses_warn_on_a_network_that_cannot_feed_them() -> None:
    """bce_loss after logits: a warning naming the logit loss; nll_loss after a built-in
    layer (none gives log-probabilities): refused; bce_loss after a sigmoid is what torch's
    BCELoss takes: silent."""
    with pytest.warns(UserWarning, match="'bce_loss'.*takes probabilities.*binary_cross_entropy"):
        dl.Trainer(dl.mlp([3, 4, 1]), loss="BCELoss")
    with pytest.raises(ValueError, match="^loss 'nll_loss' .*takes log-probabilities.*Dense"
                                         ".*use loss='cross_entropy'"):
        dl.Trainer(dl.mlp([3, 4, 2]), loss="NLLLoss")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dl.Trainer(dl.mlp([3, 4, 1], output_activation="sigmoid"), loss="BCELoss")
    assert "bce_loss" not in dl.losses.LOSSES and "nll_loss" not in dl.losses.LOSSES


def test_fan_based_bias_init_reads_the_weights_fans_as_torch_linear() -> None:
    """``bias_init="fan_in_uniform"`` drew U(+-1/sqrt(fan_out)) (the bias length as fan), not
    torch nn.Linear's default bias U(+-1/sqrt(fan_in)); he_normal biases likewise 2/fan_out."""
    wide = dl.layers.Dense(400, 2000, init="fan_in_uniform", bias_init="fan_in_uniform", rng=0,
                           dtype="float64")
    bound = 1 / np.sqrt(400)
    assert np.abs(wide.b.value).max() <= bound and np.abs(wide.b.value).max() > 0.9 * bound
    he = dl.layers.Dense(3, 4000, bias_init="he_normal", rng=1, dtype="float64")
    assert he.b.value.var() == pytest.approx(2 / 3, rel=0.1)
    f32 = dl.layers.Dense(3, 5, bias_init="he_uniform", rng=1)
    assert f32.b.value.dtype == np.float32
    # a plain callable still gets (shape, rng, dtype)
    calls = []
    dl.layers.Dense(3, 5, bias_init=lambda s, r, d: calls.append(s) or np.ones(s, d))
    assert calls == [(5,)]


@pytest.mark.parametrize("name", ["kaiming_uniform", "kaiming_normal"])
def test_kaiming_takes_torchs_a(name) -> None:
    """torch's ``kaiming_uniform_(w, a=math.sqrt(5))`` (nn.Linear's default weight) spelled
    ``dl.initializer("kaiming_uniform", a=...)`` was "unknown argument 'a'"."""
    torch = pytest.importorskip("torch")
    from depthlab.initializers import weight_variance

    fan_in, fan_out = 30, 7
    for a, mode, nl in ((5**0.5, "fan_in", "leaky_relu"), (0.2, "fan_out", "leaky_relu"),
                        (0.3, "fan_in", "relu")):
        init = dl.initializer(name, a=a, mode=mode, nonlinearity=nl)
        assert init.negative_slope == a
        fan = fan_in if mode == "fan_in" else fan_out
        want = torch.nn.init.calculate_gain(nl, a) ** 2 / fan
        assert weight_variance(init, fan_in, fan_out) == pytest.approx(want, rel=1e-14)
    lin_bound = dl.initializer("kaiming_uniform", a=5**0.5).limit(fan_in, fan_out)
    assert lin_bound == pytest.approx(1 / fan_in**0.5, rel=1e-14)  # nn.Linear's weight bound
    with pytest.raises(ValueError, match="name one slope"):
        dl.initializer(name, a=0.1, negative_slope=0.2)


def _lr_trace(lib, opt, build, epochs: int = 24) -> list[float]:
    """The lr at each epoch for schedulers ``build(lib, opt)`` stepped once per epoch."""
    sched = build(lib, opt)
    group = opt.param_groups[0]
    out = []
    for _ in range(epochs):
        out.append(float(group["lr"]))
        opt.step()
        sched.step()
    return out


_SCHEDULES = {
    # a second scheduler on one optimizer starts from torch's initial_lr (was the lr the first
    # had set: LambdaLR gave 0.05 where torch gave 0.1)
    "linear+lambda": lambda M, o: M.ChainedScheduler([M.LinearLR(o, 0.5, 1.0, 3),
                                                      M.LambdaLR(o, lambda e: 0.9**e)]),
    "multiplicative": lambda M, o: M.MultiplicativeLR(o, lambda e: 0.9),
    "constant": lambda M, o: M.ConstantLR(o, factor=0.25, total_iters=4),
    "polynomial": lambda M, o: M.PolynomialLR(o, total_iters=7, power=0.9),
    "warmup+cosine": lambda M, o: M.SequentialLR(
        o, [M.LinearLR(o, start_factor=0.1, total_iters=5),
            M.CosineAnnealingLR(o, T_max=10, eta_min=0.001)], milestones=[5]),
    "constant+exp+step": lambda M, o: M.SequentialLR(
        o, [M.ConstantLR(o, 0.5, 3), M.ExponentialLR(o, 0.9), M.StepLR(o, 3, 0.5)],
        milestones=[4, 10]),
    "multistep+poly": lambda M, o: M.SequentialLR(
        o, [M.MultiStepLR(o, [0, 2, 2], 0.5), M.PolynomialLR(o, 6, 1.5)], milestones=[4]),
    "lambda+multiplicative": lambda M, o: M.SequentialLR(
        o, [M.LambdaLR(o, lambda e: (e + 1) / 4), M.MultiplicativeLR(o, lambda e: 0.95)],
        milestones=[3]),
}


@pytest.mark.parametrize("case", list(_SCHEDULES))
def test_schedulers_give_torchs_learning_rates(case) -> None:
    """torch's ConstantLR, PolynomialLR, MultiplicativeLR, SequentialLR (warm-up then decay)
    and ChainedScheduler were missing ("no attribute"); every lr equals torch's exactly."""
    torch = pytest.importorskip("torch")
    import warnings as w

    from depthlab import optimizers as O
    from depthlab.parameter import Parameter

    opt = dl.optimizer("sgd", [Parameter("w", np.zeros(2))], lr=0.1)
    t = torch.zeros(2, requires_grad=True)
    t.grad = torch.zeros(2)
    with w.catch_warnings():
        w.simplefilter("ignore")  # torch's deprecation notes on chained schedulers
        want = _lr_trace(torch.optim.lr_scheduler, torch.optim.SGD([t], lr=0.1), _SCHEDULES[case])
    assert _lr_trace(O, opt, _SCHEDULES[case]) == want


def test_sequential_lr_refuses_what_torch_cannot_run() -> None:
    from depthlab import optimizers as O
    from depthlab.parameter import Parameter

    opt = dl.optimizer("sgd", [Parameter("w", np.zeros(2))], lr=0.1)
    other = dl.optimizer("sgd", [Parameter("v", np.zeros(2))], lr=0.1)
    with pytest.raises(ValueError, match="one milestone fewer than schedulers"):
        O.SequentialLR(opt, [O.StepLR(opt, 2), O.StepLR(opt, 3)], milestones=[])
    with pytest.raises(ValueError, match="scheduler 1 .*another optimizer"):
        O.SequentialLR(opt, [O.StepLR(opt, 2), O.StepLR(other, 3)], milestones=[3])
    with pytest.raises(TypeError, match="ReduceLROnPlateau steps with a metric"):
        O.SequentialLR(opt, [O.ReduceLROnPlateau(opt)], milestones=[])


def test_a_second_scheduler_starts_from_the_optimizers_initial_lr() -> None:
    """torch keeps the lr before any scheduler as ``initial_lr``, every scheduler's base_lr:
    LinearLR(0.5) then LambdaLR on one SGD gave lr 0.05, 0.045, ... where torch gives 0.1,
    0.09, ... (the LambdaLR read the lr the LinearLR had just set)."""
    torch = pytest.importorskip("torch")
    from depthlab import optimizers as O
    from depthlab.parameter import Parameter

    t = torch.zeros(2, requires_grad=True)
    t.grad = torch.zeros(2)
    topt = torch.optim.SGD([t], lr=0.1)
    opt = dl.optimizer("sgd", [Parameter("w", np.zeros(2))], lr=0.1)
    libs = ((torch.optim.lr_scheduler, topt), (O, opt))
    scheds = [[M.LinearLR(o, 0.5, 1.0, 3), M.LambdaLR(o, lambda e: 0.9**e)] for M, o in libs]
    for _ in range(6):
        assert opt.lr == topt.param_groups[0]["lr"]
        topt.step()
        opt.step()
        for s in (*scheds[0], *scheds[1]):
            s.step()
    assert opt.initial_lr == 0.1


def test_clip_grad_functions_take_torchs_foreach() -> None:
    """``clip_grad_norm_(params, 1.0, foreach=True)`` (torch's signature) was "unexpected
    keyword argument 'foreach'"; it has no effect here."""
    from depthlab.optimizers import clip_grad_norm_, clip_grad_value_
    from depthlab.parameter import Parameter

    p = Parameter("w", np.ones(3))
    p.grad[...] = 3.0
    assert clip_grad_norm_([p], 1.0, foreach=True) == pytest.approx(27**0.5)
    np.testing.assert_allclose(p.grad, 3.0 / (27**0.5 + 1e-6))
    clip_grad_value_(p, 0.1, foreach=False)
    assert np.all(p.grad == 0.1)
    with pytest.raises(TypeError, match="foreach='yes' is not accepted"):
        clip_grad_value_(p, 0.1, foreach="yes")


def test_nll_loss_refusals_name_it() -> None:
    """NLLLoss reuses cross_entropy's label checks: its lines name nll_loss, not
    cross_entropy, and ask for log-probabilities."""
    loss = dl.loss("NLLLoss")
    with pytest.raises(ValueError, match=r"^nll_loss: pred must be log-probabilities of shape"):
        loss.forward(np.zeros(3), np.array(1))
    with pytest.raises(ValueError, match=r"^nll_loss: label 5 out of range"):
        loss.forward(np.zeros((2, 3)), np.array([0, 5]))
    with pytest.raises(ValueError, match=r"^nll_loss \(torch's NLLLoss\) takes integer labels"):
        loss.forward(np.zeros((2, 3)), np.full((2, 3), 1 / 3))


@pytest.mark.parametrize("last_epoch", [-1, 0, 3, 7])
def test_schedulers_take_torchs_last_epoch(last_epoch) -> None:
    """``StepLR(opt, 3, last_epoch=-1)`` (torch's argument, often written out in ported code)
    was "unexpected keyword argument 'last_epoch'"; a resumed schedule (initial_lr set, the
    optimizer at its lr) follows torch's lrs."""
    torch = pytest.importorskip("torch")
    import warnings as w

    from depthlab import optimizers as O
    from depthlab.parameter import Parameter

    builds = [lambda M, o, e: M.StepLR(o, 3, 0.5, last_epoch=e),
              lambda M, o, e: M.LinearLR(o, 0.2, 1.0, 6, last_epoch=e),
              lambda M, o, e: M.CosineAnnealingLR(o, 5, 0.01, last_epoch=e),
              lambda M, o, e: M.ExponentialLR(o, 0.9, last_epoch=e)]
    for build in builds:
        opt = dl.optimizer("sgd", [Parameter("w", np.zeros(2))], lr=0.07)
        t = torch.zeros(2, requires_grad=True)
        t.grad = torch.zeros(2)
        topt = torch.optim.SGD([t], lr=0.07)
        opt.initial_lr = topt.param_groups[0]["initial_lr"] = 0.1
        with w.catch_warnings():
            w.simplefilter("ignore")
            want = _lr_trace(torch.optim.lr_scheduler, topt,
                             lambda M, o, b=build: b(M, o, last_epoch), epochs=12)
        assert _lr_trace(O, opt, lambda M, o, b=build: b(M, o, last_epoch), epochs=12) == want
    fresh = dl.optimizer("sgd", [Parameter("w", np.zeros(2))], lr=0.1)
    with pytest.raises(ValueError, match="last_epoch=4 resumes a schedule.*initial_lr"):
        O.StepLR(fresh, 3, last_epoch=4)


def test_optimizer_state_dict_keeps_initial_lr_for_a_resumed_schedule() -> None:
    """torch's optimizer state_dict carries ``initial_lr``, so ``StepLR(opt, ...,
    last_epoch=k)`` resumes after ``opt.load_state_dict``; depthlab's dropped it (the resumed
    scheduler had no initial_lr)."""
    from depthlab import optimizers as O
    from depthlab.parameter import Parameter

    def fresh():
        return dl.optimizer("adam", [Parameter("w", np.ones(2))], lr=0.1)

    opt = fresh()
    sched = O.StepLR(opt, 2, 0.5)
    for _ in range(5):
        opt.step()
        sched.step()
    resumed = fresh()
    resumed.load_state_dict(opt.state_dict())
    assert resumed.initial_lr == 0.1 and resumed.lr == opt.lr
    # torch's convention: the constructor steps once from last_epoch to the current epoch
    again = O.StepLR(resumed, 2, 0.5, last_epoch=sched.last_epoch - 1)
    for _ in range(4):
        opt.step()
        resumed.step()
        sched.step()
        again.step()
        assert resumed.lr == opt.lr
    assert "initial_lr" not in fresh().state_dict()


def test_cosine_warm_restarts_as_torch_with_fractional_epochs() -> None:
    """torch's CosineAnnealingWarmRestarts was missing; per epoch, per fraction of an epoch
    (``step(epoch + i / iters)``) and after a warm-up in SequentialLR: torch's lrs exactly."""
    torch = pytest.importorskip("torch")
    import warnings as w

    from depthlab import optimizers as O
    from depthlab.parameter import Parameter

    TS = torch.optim.lr_scheduler
    t = torch.zeros(2, requires_grad=True)
    t.grad = torch.zeros(2)
    kw = {"T_0": 2, "T_mult": 2, "eta_min": 0.01}
    topt = torch.optim.SGD([t], lr=0.1)
    opt = dl.optimizer("sgd", [Parameter("w", np.zeros(2))], lr=0.1)
    tsched = TS.CosineAnnealingWarmRestarts(topt, **kw)
    sched = O.CosineAnnealingWarmRestarts(opt, **kw)
    for epoch in range(9):
        for i in range(3):
            tsched.step(epoch + i / 3)
            sched.step(epoch + i / 3)
            assert opt.lr == topt.param_groups[0]["lr"], (epoch, i)
    with w.catch_warnings():
        w.simplefilter("ignore")
        want = _lr_trace(TS, torch.optim.SGD([t], lr=0.1), lambda M, o: M.SequentialLR(
            o, [M.LinearLR(o, 0.1, 1.0, 4), M.CosineAnnealingWarmRestarts(o, 3, 2)], [4]))
    opt = dl.optimizer("sgd", [Parameter("w", np.zeros(2))], lr=0.1)
    assert _lr_trace(O, opt, lambda M, o: M.SequentialLR(
        o, [M.LinearLR(o, 0.1, 1.0, 4), M.CosineAnnealingWarmRestarts(o, 3, 2)], [4])) == want


def test_param_group_initial_lr_as_torch_resume_code_sets_it() -> None:
    """torch resume code writes ``g.setdefault("initial_lr", g["lr"])`` before building a
    scheduler with ``last_epoch``: was "KeyError: 'initial_lr': a sgd group holds params,
    lr, ..."."""
    torch = pytest.importorskip("torch")
    from depthlab import optimizers as O
    from depthlab.parameter import Parameter

    opt = dl.optimizer("sgd", [Parameter("w", np.zeros(2))], lr=0.3)
    topt = torch.optim.SGD([torch.zeros(2, requires_grad=True)], lr=0.3)
    assert "initial_lr" not in opt.param_groups[0]
    for o in (opt, topt):
        for g in o.param_groups:
            g.setdefault("initial_lr", g["lr"])
    O.StepLR(opt, 2, last_epoch=3)
    torch.optim.lr_scheduler.StepLR(topt, 2, last_epoch=3)
    assert opt.lr == topt.param_groups[0]["lr"] and opt.param_groups[0]["initial_lr"] == 0.3


def test_plateau_and_chained_schedulers_save_and_resume() -> None:
    """torch's ReduceLROnPlateau and ChainedScheduler have state_dict/load_state_dict (a
    checkpoint saves them beside the optimizer's); depthlab's had none ("no attribute
    'state_dict'"). A resumed pair continues with the lrs of the uninterrupted one."""
    import copy

    from depthlab import optimizers as O
    from depthlab.parameter import Parameter

    metrics = [1.0, 0.9, 0.95, 0.96, 0.97, 0.5, 0.6, 0.7, 0.8, 0.9, 0.4, 0.45, 0.46, 0.47]

    def opt():
        return dl.optimizer("sgd", [Parameter("w", np.zeros(2))], lr=0.1)

    a = opt()
    plateau = O.ReduceLROnPlateau(a, factor=0.5, patience=1, cooldown=1)
    for m in metrics[:6]:
        plateau.step(m)
    b = opt()
    b.load_state_dict(a.state_dict())
    resumed = O.ReduceLROnPlateau(b)
    resumed.load_state_dict(copy.deepcopy(plateau.state_dict()))
    for m in metrics[6:]:
        plateau.step(m)
        resumed.step(m)
        assert b.lr == a.lr
    assert a.lr < 0.1 and resumed.patience == 1
    c, d = opt(), opt()
    chain = O.ChainedScheduler([O.ConstantLR(c, 0.5, 4), O.ExponentialLR(c, 0.9)])
    for _ in range(2):
        chain.step()
    d.load_state_dict(c.state_dict())
    again = O.ChainedScheduler([O.ConstantLR(d, 0.5, 4), O.ExponentialLR(d, 0.9)])
    again.load_state_dict(chain.state_dict())
    d.lr = c.lr
    for _ in range(5):
        chain.step()
        again.step()
        assert d.lr == c.lr
    with pytest.raises(ValueError, match="missing .*best"):
        resumed.load_state_dict({"mode": "min"})


def test_sequential_lr_resumes_from_its_state_dict() -> None:
    """SequentialLR.load_state_dict refused its own state ("invalid last_epoch value: -1"):
    a scheduler that has not started holds torch's undone epoch -1. Warm restarts resume
    mid-cycle (T_cur, T_i saved)."""
    import copy

    from depthlab import optimizers as O
    from depthlab.parameter import Parameter

    def build():
        o = dl.optimizer("sgd", [Parameter("w", np.zeros(2))], lr=0.1)
        return o, O.SequentialLR(o, [O.LinearLR(o, 0.1, 1.0, 4),
                                     O.CosineAnnealingWarmRestarts(o, 3, 2, 0.001)], [4])

    a, sa = build()
    for steps in (3, 6):  # before the milestone, then inside a restart period
        for _ in range(steps):
            sa.step()
        b, sb = build()
        b.load_state_dict(a.state_dict())
        sb.load_state_dict(copy.deepcopy(sa.state_dict()))
        for _ in range(8):
            sa.step()
            sb.step()
            assert b.lr == a.lr
