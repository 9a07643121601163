"""Round 42 (paramgroups42): torch's parameter groups in the NumPy engine's optimizers and
schedulers, checked step for step against torch."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import depthlab.optimizers as O
from depthlab.parameter import Parameter

torch = pytest.importorskip("torch")
L = torch.optim.lr_scheduler

SHAPES = [(5, 4), (4,), (3, 5), (3,), ()]


def _pair(dtype: type, seed: int = 0) -> tuple[list[Parameter], list[object], np.random.Generator]:
    rng = np.random.default_rng(seed)
    vals = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    ps = [Parameter(f"p{i}", v.copy()) for i, v in enumerate(vals)]
    ts = [torch.tensor(v.copy(), requires_grad=True) for v in vals]
    return ps, ts, rng


def _feed(ps: list[Parameter], ts: list[object], rng: np.random.Generator) -> None:
    for p, t in zip(ps, ts):
        g = rng.standard_normal(p.value.shape).astype(p.value.dtype)
        p.grad = g + 0.1 * p.value
        t.grad = torch.tensor(g) + 0.1 * t.detach()


def _gap(ps: list[Parameter], ts: list[object]) -> float:
    return max(float(np.max(np.abs(p.value - t.detach().numpy()))) for p, t in zip(ps, ts))


def _groups(items: list, split: list[list[int]], hyper: list[dict]) -> list[dict]:
    return [{"params": [items[i] for i in idx], **h} for idx, h in zip(split, hyper)]


CASES = [
    ("SGD", {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-2},
     [{"lr": 0.01}, {"momentum": 0.5, "nesterov": True, "weight_decay": 0}, {"momentum": 0.0}]),
    ("Adam", {"lr": 1e-2},
     [{"betas": (0.8, 0.99), "weight_decay": 0.1}, {"lr": 3e-3, "amsgrad": True}, {}]),
    ("AdamW", {"lr": 1e-2}, [{"weight_decay": 0}, {"lr": 3e-3, "betas": (0.5, 0.9)}]),
    ("RMSprop", {"lr": 1e-2, "momentum": 0.5},
     [{"centered": True}, {"alpha": 0.9, "momentum": 0, "weight_decay": 0.1}]),
    ("Adagrad", {"lr": 0.1},
     [{"lr_decay": 0.01}, {"initial_accumulator_value": 0.1, "weight_decay": 0.1}, {}]),
    ("Adadelta", {"lr": 1.0}, [{"rho": 0.8}, {"weight_decay": 0.1, "lr": 0.5}]),
    ("NAdam", {"lr": 2e-3}, [{"momentum_decay": 1e-2}, {"betas": (0.7, 0.95)},
                            {"decoupled_weight_decay": True, "weight_decay": 0.1}]),
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(("name", "defaults", "hyper"), CASES, ids=[c[0] for c in CASES])
def test_groups_match_torch_every_step(name: str, defaults: dict, hyper: list[dict],
                                       dtype: type) -> None:
    """Each group is stepped with its own hyperparameters (the constructor's as defaults);
    ``param_groups`` are live per group (the lr halved in each at step 30). torch's Adagrad
    starts every group's sum at the constructor's initial_accumulator_value."""
    torch.set_default_dtype(torch.float64 if dtype is np.float64 else torch.float32)
    try:
        ps, ts, rng = _pair(dtype)
        split = [[0, 1], [2], [3, 4]] if len(hyper) == 3 else [[0, 1, 4], [2, 3]]
        ours = getattr(O, name)(_groups(ps, split, hyper), **defaults)
        theirs = getattr(torch.optim, name)(_groups(ts, split, hyper), **defaults)
        assert len(ours.param_groups) == len(hyper)
        for step in range(60):
            _feed(ps, ts, rng)
            ours.step()
            theirs.step()
            if step == 30:
                for a, b in zip(ours.param_groups, theirs.param_groups):
                    a["lr"] *= 0.5
                    b["lr"] *= 0.5
        for a, b in zip(ours.param_groups, theirs.param_groups):
            assert a["lr"] == b["lr"]
        assert all(p.value.dtype == dtype for p in ps)
        assert _gap(ps, ts) < (1e-12 if dtype is np.float64 else 2e-6)  # seen: 3e-16, 3e-7
    finally:
        torch.set_default_dtype(torch.float32)


def test_add_param_group_and_state_dict_resume_as_torch() -> None:
    """A one-group optimizer takes a second group mid-run (fresh state, step 0, as torch's);
    ``state_dict`` has torch's group layout, and a new optimizer loading it continues bit
    for bit."""
    torch.set_default_dtype(torch.float64)
    try:
        ps, ts, rng = _pair(np.float64, seed=3)
        ours, theirs = O.Adam(ps[:3], lr=1e-2), torch.optim.Adam(ts[:3], lr=1e-2)
        for _ in range(5):
            _feed(ps[:3], ts[:3], rng)
            ours.step()
            theirs.step()
        ours.param_groups[0]["lr"] = theirs.param_groups[0]["lr"] = 5e-3
        for o in (ours, theirs):
            o.add_param_group({"params": (ps if o is ours else ts)[3:], "lr": 0.1,
                               "betas": (0.5, 0.9)})
        assert ours.defaults["lr"] == 1e-2 and [g["lr"] for g in ours.param_groups] == [5e-3,
                                                                                       0.1]
        for _ in range(10):
            _feed(ps, ts, rng)
            ours.step()
            theirs.step()
        assert _gap(ps, ts) < 1e-13
        sd = pickle.loads(pickle.dumps(ours.state_dict()))
        assert [g["params"] for g in sd["param_groups"]] == [[0, 1, 2], [3, 4]]
        assert [g["step"] for g in sd["param_groups"]] == [15, 10]
        at_save = [p.value.copy() for p in ps]
        grads = [[rng.standard_normal(s) for s in SHAPES] for _ in range(8)]
        for gs in grads:
            for p, g in zip(ps, gs):
                p.grad = g
            ours.step()
        ps2 = [Parameter(f"q{i}", v.copy()) for i, v in enumerate(at_save)]
        resumed = O.Adam([{"params": ps2[:3]}, {"params": ps2[3:]}], lr=0.5)
        resumed.load_state_dict(sd)
        assert resumed.defaults["lr"] == 1e-2
        assert [g["betas"] for g in resumed.param_groups] == [(0.9, 0.999), (0.5, 0.9)]
        for gs in grads:
            for p, g in zip(ps2, gs):
                p.grad = g
            resumed.step()
        for p, q in zip(ps, ps2):
            np.testing.assert_array_equal(p.value, q.value)
        with pytest.raises(ValueError, match="has 2 parameter groups; this adam optimizer has 3"):
            O.Adam(_groups(ps2, [[0], [1], [2, 3, 4]], [{}, {}, {}])).load_state_dict(sd)
        with pytest.raises(ValueError, match="size of optimizer's group"):
            O.Adam(_groups(ps2, [[0, 1], [2, 3, 4]], [{}, {}])).load_state_dict(sd)
    finally:
        torch.set_default_dtype(torch.float32)


def test_bad_groups_refused_in_one_line() -> None:
    """A parameter in two groups, a set of parameters, a group without ``params``, an unknown
    hyperparameter or a bad value: one clear error, as torch's; nothing is added."""
    ps = [Parameter(f"p{i}", np.zeros(3)) for i in range(3)]
    with pytest.raises(ValueError, match="more than one parameter group"):
        O.SGD([{"params": ps[:2]}, {"params": ps[1:]}], lr=0.1)
    opt = O.SGD([{"params": ps[:2]}], lr=0.1)
    with pytest.raises(ValueError, match="more than one parameter group"):
        opt.add_param_group({"params": [ps[2], ps[0]]})
    with pytest.raises(TypeError, match="ordered collections"):
        opt.add_param_group({"params": {ps[2]}})
    with pytest.raises(ValueError, match="needs 'params'"):
        opt.add_param_group({"lr": 0.1})
    with pytest.raises(TypeError, match="unknown hyperparameter"):
        opt.add_param_group({"params": [ps[2]], "betas": (0.9, 0.99)})
    with pytest.raises(ValueError, match="momentum"):
        opt.add_param_group({"params": [ps[2]], "momentum": -1.0})
    with pytest.raises(TypeError, match="mixes parameter groups"):
        O.SGD([{"params": ps[:1]}, ps[2]], lr=0.1)
    assert len(opt.param_groups) == 1 and opt.params == ps[:2]
    with pytest.raises(AttributeError, match=r"param_groups\[i\]\['lr'\]"):
        opt.lr = 0.5  # several-group optimizers have no single lr to set


def test_groups_zero_grad_state_and_refused_grad() -> None:
    """``zero_grad`` and ``state`` cover every group; a bad ``.grad`` in the last group is
    refused before any group is updated."""
    ps = [Parameter(f"p{i}", np.ones(2)) for i in range(3)]
    opt = O.SGD([{"params": ps[:1], "lr": 1.0}, {"params": ps[1:]}], lr=0.1, momentum=0.9)
    for p in ps:
        p.grad = np.ones(2)
    opt.step()
    assert set(opt.state) == set(ps) and "momentum_buffer" in opt.state[ps[2]]
    np.testing.assert_allclose([p.value[0] for p in ps], [0.0, 0.9, 0.9])
    ps[2].grad = None
    with pytest.raises(ValueError, match="no parameter was updated"):
        opt.step()
    np.testing.assert_allclose([p.value[0] for p in ps], [0.0, 0.9, 0.9])
    opt.zero_grad()
    assert all(np.all(p.grad == 0) for p in ps)
    opt.zero_grad(set_to_none=True)
    assert all(p.grad is None for p in ps)


def _sched_cases() -> dict:
    return {
        "StepLR": lambda m, o: m.StepLR(o, 7, 0.5),
        "MultiStepLR": lambda m, o: m.MultiStepLR(o, [10, 30, 30, 70], 0.3),
        "ExponentialLR": lambda m, o: m.ExponentialLR(o, 0.97),
        "LinearLR": lambda m, o: m.LinearLR(o, 0.1, 1.0, 20),
        "CosineAnnealingLR": lambda m, o: m.CosineAnnealingLR(o, 30, 1e-4),
        "LambdaLR": lambda m, o: m.LambdaLR(o, lambda e: 0.99 ** e),
        "LambdaLR_per_group": lambda m, o: m.LambdaLR(
            o, [lambda e: 0.99 ** e, lambda e: 1 / (1 + e), lambda e: min(1, e / 10)]),
        "MultiplicativeLR": lambda m, o: m.MultiplicativeLR(
            o, [lambda e: 0.99, lambda e: 0.95, lambda e: 1.0]),
        "ConstantLR": lambda m, o: m.ConstantLR(o, 0.25, 12),
        "PolynomialLR": lambda m, o: m.PolynomialLR(o, 80, 2.0),
        "CosineAnnealingWarmRestarts": lambda m, o: m.CosineAnnealingWarmRestarts(
            o, 10, 2, 1e-3),
        "OneCycleLR": lambda m, o: m.OneCycleLR(o, [1.0, 0.1, 0.5], total_steps=130,
                                                base_momentum=[0.8, 0.85, 0.7]),
        "OneCycleLR_linear": lambda m, o: m.OneCycleLR(o, 0.4, total_steps=130,
                                                       anneal_strategy="linear",
                                                       three_phase=True),
        "CyclicLR": lambda m, o: m.CyclicLR(o, [0.01, 0.001, 0.1], [0.1, 0.05, 1.0],
                                            step_size_up=9, mode="triangular2",
                                            max_momentum=[0.9, 0.95, 0.99]),
        "SequentialLR": lambda m, o: m.SequentialLR(
            o, [m.LinearLR(o, 0.1, 1.0, 10), m.CosineAnnealingLR(o, 50)], [10]),
        "ChainedScheduler": lambda m, o: m.ChainedScheduler(
            [m.ExponentialLR(o, 0.98), m.StepLR(o, 10, 0.5)]),
    }


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")
@pytest.mark.parametrize("case", list(_sched_cases()))
def test_schedulers_set_each_group_as_torch(case: str) -> None:
    """Each group follows the schedule from its own ``initial_lr`` (per-group ``max_lr``,
    ``base_lr``, momenta, lambdas where torch takes lists); ``get_last_lr()`` has one value
    per group; equal to torch's for 120 steps, momentum included."""
    build = _sched_cases()[case]
    hyper = [{"lr": 0.1}, {"lr": 0.01}, {"lr": 0.3}]
    ps = [Parameter(f"p{i}", np.zeros(2)) for i in range(3)]
    ts = [torch.zeros(2, requires_grad=True) for _ in range(3)]
    ours = O.SGD(_groups(ps, [[0], [1], [2]], hyper), lr=0.05, momentum=0.9)
    theirs = torch.optim.SGD(_groups(ts, [[0], [1], [2]], hyper), lr=0.05, momentum=0.9)
    so, st = build(O, ours), build(L, theirs)
    for step in range(120):
        assert so.get_last_lr() == pytest.approx(st.get_last_lr(), rel=1e-14, abs=0), step
        assert [g["momentum"] for g in ours.param_groups] == pytest.approx(
            [g["momentum"] for g in theirs.param_groups], rel=1e-14, abs=0), step
        so.step()
        st.step()


def test_plateau_and_scheduler_state_with_groups() -> None:
    """ReduceLROnPlateau lowers each group's lr to its own ``min_lr``; a scheduler's
    ``state_dict`` keeps one ``base_lr`` per group; a wrong count of lambdas is refused."""
    hyper = [{"lr": 0.1}, {"lr": 0.01}, {"lr": 0.3}]
    ps = [Parameter(f"p{i}", np.zeros(2)) for i in range(3)]
    ts = [torch.zeros(2, requires_grad=True) for _ in range(3)]
    ours = O.SGD(_groups(ps, [[0], [1], [2]], hyper), lr=0.05)
    theirs = torch.optim.SGD(_groups(ts, [[0], [1], [2]], hyper), lr=0.05)
    so = O.ReduceLROnPlateau(ours, factor=0.5, patience=2, min_lr=[1e-3, 4e-3, 0.0])
    st = L.ReduceLROnPlateau(theirs, factor=0.5, patience=2, min_lr=[1e-3, 4e-3, 0.0])
    rng = np.random.default_rng(0)
    for i in range(60):
        metric = float(rng.random() + 1.0 / (1 + i))
        so.step(metric)
        st.step(metric)
        assert so.get_last_lr() == st.get_last_lr(), i
    so2 = O.ReduceLROnPlateau(ours)
    so2.load_state_dict(so.state_dict())
    assert so2.min_lrs == [1e-3, 4e-3, 0.0]
    sched = O.StepLR(ours, 3)
    assert sched.state_dict()["base_lrs"] == [g["initial_lr"] for g in ours.param_groups]
    with pytest.raises(ValueError, match="Expected 3 lr_lambdas, but got 2"):
        O.LambdaLR(ours, [lambda e: 1.0, lambda e: 1.0])
    with pytest.raises(ValueError, match="expected 3 values for max_lr"):
        O.OneCycleLR(ours, [0.1, 0.2], total_steps=10)


def test_one_group_state_dict_has_torch_group_layout() -> None:
    """A one-group optimizer's ``state_dict`` also holds torch's ``param_groups`` (torch code
    reads ``sd["param_groups"][0]["lr"]``); a group's value edited there is loaded, and a
    plain optimizer and one built from one dict load each other's state."""
    ps = [Parameter(f"p{i}", np.ones(3)) for i in range(2)]
    plain = O.SGD(ps, lr=0.1, momentum=0.9)
    for p in ps:
        p.grad = np.full(3, 0.5)
    plain.step()
    sd = plain.state_dict()
    assert sd["param_groups"][0]["lr"] == 0.1 and sd["param_groups"][0]["params"] == [0, 1]
    sd["param_groups"][0]["lr"] = 0.05
    grouped = O.SGD([{"params": ps, "momentum": 0.5}], lr=1.0)
    grouped.load_state_dict(sd)
    assert grouped.param_groups[0]["lr"] == 0.05 and grouped.param_groups[0]["momentum"] == 0.9
    assert grouped.defaults["lr"] == 0.1
    np.testing.assert_array_equal(grouped.state[ps[0]]["momentum_buffer"], np.full(3, 0.5))
    again = O.SGD(ps)
    again.load_state_dict(grouped.state_dict())
    assert (again.lr, again.momentum, again.step_count) == (0.05, 0.9, 1)
    with pytest.raises(ValueError, match="has 1 parameter groups; this sgd optimizer has 2"):
        O.SGD([{"params": ps[:1]}, {"params": ps[1:]}]).load_state_dict(sd)


@pytest.mark.parametrize("kind", ["cosine", "onecycle", "sequential", "warm_restarts"])
def test_scheduler_with_groups_resumes_mid_run(kind: str) -> None:
    """torch's resume: build the optimizer and scheduler again, load both state dicts; the
    next 30 steps' per-group lrs and weights equal those of the run never stopped."""
    import copy

    def build(ps: list[Parameter]) -> tuple[O.Optimizer, object]:
        opt = O.SGD([{"params": ps[:1], "lr": 0.1}, {"params": ps[1:], "lr": 0.01}],
                    lr=0.05, momentum=0.9)
        sched = {"cosine": lambda: O.CosineAnnealingLR(opt, 40, 1e-4),
                 "onecycle": lambda: O.OneCycleLR(opt, [1.0, 0.1], total_steps=60),
                 "sequential": lambda: O.SequentialLR(
                     opt, [O.LinearLR(opt, 0.1, 1.0, 10), O.CosineAnnealingLR(opt, 30)], [10]),
                 "warm_restarts": lambda: O.CosineAnnealingWarmRestarts(opt, 7, 2)}[kind]()
        return opt, sched

    rng = np.random.default_rng(0)
    grads = [rng.standard_normal(3) for _ in range(50)]
    ps = [Parameter(f"p{i}", np.ones(3)) for i in range(2)]
    opt, sched = build(ps)
    lrs = []
    for k, g in enumerate(grads):
        if k == 20:
            saved = copy.deepcopy((opt.state_dict(), sched.state_dict()))
            values = [p.value.copy() for p in ps]
        for p in ps:
            p.grad = g.copy()
        opt.step()
        sched.step()
        lrs.append(sched.get_last_lr())
    ps2 = [Parameter(f"p{i}", v) for i, v in enumerate(values)]
    opt2, sched2 = build(ps2)
    opt2.load_state_dict(saved[0])
    sched2.load_state_dict(saved[1])
    for k, g in enumerate(grads[20:]):
        for p in ps2:
            p.grad = g.copy()
        opt2.step()
        sched2.step()
        assert sched2.get_last_lr() == lrs[20 + k] and len(lrs[20 + k]) == 2
    for p, q in zip(ps, ps2):
        np.testing.assert_array_equal(p.value, q.value)


def test_group_added_after_the_scheduler_is_one_line() -> None:
    """A group added after its scheduler was built has no schedule (no ``initial_lr`` in
    ``base_lrs``): the next step says so in one line; a scheduler built again covers it."""
    ps = [Parameter(f"p{i}", np.ones(2)) for i in range(2)]
    opt = O.SGD(ps[:1], lr=0.1)
    sched = O.StepLR(opt, 1, 0.5)
    opt.add_param_group({"params": ps[1:], "lr": 0.2})
    with pytest.raises(ValueError, match="built for 1 parameter group"):
        sched.step()
    plateau = O.ReduceLROnPlateau(opt, patience=0)
    opt.add_param_group({"params": [Parameter("p2", np.ones(2))]})
    plateau.step(1.0)
    with pytest.raises(ValueError, match="built for 2 parameter group"):
        plateau.step(2.0)
    sched = O.StepLR(opt, 1, 0.5)
    sched.step()
    assert sched.get_last_lr() == [0.05, 0.1, 0.05]  # the third: the default lr 0.1, halved


def test_get_optimizer_takes_a_grouped_instance_in_any_parameter_order() -> None:
    """Groups hold the parameters in the groups' order (weights, then biases): an instance
    with several groups is taken for the same parameters in another order (fit passes
    ``net.parameters()``); one group keeps the order check, and other parameters are refused."""
    ps = [Parameter(f"p{i}", np.ones(2)) for i in range(4)]
    opt = O.SGD([{"params": [ps[0], ps[2]]}, {"params": [ps[1], ps[3]], "weight_decay": 0}],
                lr=0.1, weight_decay=1e-4)
    assert O.get_optimizer(opt, ps) is opt
    with pytest.raises(ValueError, match="built on other parameters"):
        O.get_optimizer(opt, [*ps[:3], Parameter("q", np.ones(2))])
    with pytest.raises(ValueError, match="built on other parameters"):
        O.get_optimizer(O.SGD([ps[1], ps[0]], lr=0.1), ps[:2])
