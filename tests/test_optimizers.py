"""Optimizers against torch.optim, step by step, plus interface and allocation checks."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch  # a dev dependency: required, never skipped

from depthlab.backend import rng as make_rng
from depthlab.optimizers import (
    OPTIMIZERS,
    SGD,
    Adadelta,
    Adagrad,
    Adam,
    Adamax,
    AdamW,
    NAdam,
    Optimizer,
    RAdam,
    RMSprop,
    get_optimizer,
)
from depthlab.parameter import Parameter

SHAPES = [(6, 4), (4,), (2, 3, 2), ()]
N_STEPS = 100
LR_CHANGE_AT = 60  # lr is halved here, in both libraries

TORCH_CLASSES = {
    "sgd": "SGD", "adagrad": "Adagrad", "adadelta": "Adadelta",
    "rmsprop": "RMSprop", "adam": "Adam", "adamw": "AdamW", "nadam": "NAdam",
    "radam": "RAdam", "adamax": "Adamax",
}

# (name, kwargs): every documented hyperparameter takes a non-default value somewhere.
GRID = [
    ("sgd", {"lr": 0.05}),
    ("sgd", {"lr": 0.05, "momentum": 0.9}),
    ("sgd", {"lr": 0.05, "momentum": 0.9, "dampening": 0.3}),
    ("sgd", {"lr": 0.05, "momentum": 0.8, "nesterov": True}),
    ("sgd", {"lr": 0.05, "weight_decay": 0.1}),
    ("sgd", {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.1, "nesterov": True}),
    ("sgd", {"lr": 0.02, "momentum": 0.5, "dampening": 0.5, "maximize": True}),
    ("sgd", {"lr": 0.02, "momentum": 0.7, "nesterov": True, "maximize": True,
             "weight_decay": 0.05}),
    ("adagrad", {}),
    ("adagrad", {"lr": 0.1, "lr_decay": 0.05}),
    ("adagrad", {"lr": 0.1, "initial_accumulator_value": 0.5}),
    ("adagrad", {"lr": 0.1, "eps": 1e-3, "weight_decay": 0.1}),
    ("adagrad", {"lr": 0.1, "maximize": True, "lr_decay": 0.01}),
    ("adadelta", {}),
    ("adadelta", {"lr": 0.5, "rho": 0.5}),
    ("adadelta", {"eps": 1e-3}),
    ("adadelta", {"lr": 0.7, "weight_decay": 0.1}),
    ("adadelta", {"rho": 0.95, "maximize": True}),
    ("adadelta", {"maximize": True, "weight_decay": 0.2}),
    ("rmsprop", {}),
    ("rmsprop", {"lr": 0.005, "alpha": 0.9, "eps": 1e-4}),
    ("rmsprop", {"centered": True}),
    ("rmsprop", {"momentum": 0.9, "lr": 0.003}),
    ("rmsprop", {"centered": True, "momentum": 0.5, "weight_decay": 0.1}),
    ("rmsprop", {"maximize": True, "centered": True}),
    ("rmsprop", {"maximize": True, "momentum": 0.3, "alpha": 0.3}),
    ("adam", {}),
    ("adam", {"lr": 0.01, "betas": (0.8, 0.99), "eps": 1e-4}),
    ("adam", {"lr": 0.01, "amsgrad": True}),
    ("adam", {"lr": 0.01, "weight_decay": 0.1}),
    ("adam", {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True}),
    ("adam", {"lr": 0.01, "betas": (0.3, 0.5)}),  # lerp weight >= 0.5 branch
    ("adam", {"lr": 0.01, "maximize": True, "amsgrad": True, "weight_decay": 0.05}),
    ("adamw", {}),  # torch's default weight_decay 1e-2, decoupled
    ("adamw", {"lr": 0.01, "weight_decay": 0.3, "amsgrad": True}),
    ("adamw", {"lr": 0.01, "maximize": True, "betas": (0.8, 0.9)}),
    ("nadam", {}),
    ("nadam", {"momentum_decay": 0.05, "lr": 0.01}),
    ("nadam", {"betas": (0.8, 0.95), "eps": 1e-4}),
    ("nadam", {"weight_decay": 0.1, "lr": 0.01}),
    ("nadam", {"weight_decay": 0.1, "decoupled_weight_decay": True, "lr": 0.01}),
    ("nadam", {"maximize": True, "lr": 0.01}),
    ("nadam", {"maximize": True, "weight_decay": 0.05}),
]


@pytest.fixture
def torch_float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def _initial_values(dtype=np.float64) -> list[np.ndarray]:
    g = make_rng(123)
    return [g.standard_normal(s).astype(dtype) for s in SHAPES]


def _noise(n_steps: int, dtype=np.float64) -> list[list[np.ndarray]]:
    g = make_rng(7)
    return [[g.standard_normal(s).astype(dtype) for s in SHAPES] for _ in range(n_steps)]


def _grad(w: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """A state-dependent gradient: trajectories diverge if any update differs."""
    return np.asarray(0.5 * w + 0.3 * np.tanh(3.0 * w) + 0.2 * noise)


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def _run(name: str, kwargs: dict, n_steps: int = N_STEPS, dtype=np.float64,
         lr_change: bool = True):
    """Yield (depthlab values, torch values) after every step."""
    init, noise = _initial_values(dtype), _noise(n_steps, dtype)
    dl_params = [Parameter(f"p{i}", v.copy()) for i, v in enumerate(init)]
    tp = [torch.nn.Parameter(torch.tensor(v.copy())) for v in init]
    opt = get_optimizer(name, dl_params, **kwargs)
    topt = getattr(torch.optim, TORCH_CLASSES[name])(tp, **kwargs)
    for t in range(n_steps):
        if lr_change and t == LR_CHANGE_AT:
            opt.lr = opt.lr * 0.5
            for group in topt.param_groups:
                group["lr"] = group["lr"] * 0.5
        for p, q, z in zip(dl_params, tp, noise[t]):
            p.grad[...] = _grad(p.value, z)
            q.grad = torch.from_numpy(_grad(q.detach().numpy(), z))
        opt.step()
        topt.step()
        yield [p.value for p in dl_params], [q.detach().numpy() for q in tp]


def _ids(case):
    name, kw = case
    return name + "-" + ",".join(f"{k}={v}" for k, v in kw.items())


@pytest.mark.parametrize("case", GRID, ids=[_ids(c) for c in GRID])
def test_matches_torch_every_step(case, torch_float64):
    name, kwargs = case
    worst = 0.0
    for t, (ours, theirs) in enumerate(_run(name, kwargs)):
        for a, b in zip(ours, theirs):
            err = _rel(a, b)
            worst = max(worst, err)
            assert err < 1e-10, f"step {t + 1}: rel err {err:.3e}"
    # the run moved the parameters a visible amount (not a no-op comparison)
    init = _initial_values()
    assert max(_rel(a, b) for a, b in zip(ours, init)) > 1e-3


@pytest.mark.parametrize(
    "case", [c for c in GRID if len(c[1]) > 1 or (c[1] and "lr" not in c[1])],
    ids=[_ids(c) for c in GRID if len(c[1]) > 1 or (c[1] and "lr" not in c[1])],
)
def test_each_hyperparameter_changes_the_trajectory(case, torch_float64):
    """Dropping any one non-lr hyperparameter of a grid case changes the result: the
    comparison against torch would notice a hyperparameter being ignored or misapplied."""
    name, kwargs = case
    final = [v.copy() for v in list(_run(name, kwargs, n_steps=30))[-1][0]]
    for key in kwargs:
        if key == "lr":
            continue
        reduced = {k: v for k, v in kwargs.items() if k != key}
        if key == "momentum":
            reduced.pop("nesterov", None)
            reduced.pop("dampening", None)
        other = list(_run(name, reduced, n_steps=30))[-1][0]
        assert max(_rel(a, b) for a, b in zip(other, final)) > 1e-6, key


def test_state_matches_torch_state(torch_float64):
    """Buffers carry torch's names and values."""
    for name, kwargs in [("adam", {"amsgrad": True, "lr": 0.01}),
                         ("rmsprop", {"centered": True, "momentum": 0.5, "maximize": True}),
                         ("nadam", {"weight_decay": 0.1}), ("sgd", {"momentum": 0.9})]:
        init, noise = _initial_values(), _noise(20)
        ps = [Parameter(f"p{i}", v.copy()) for i, v in enumerate(init)]
        tp = [torch.nn.Parameter(torch.tensor(v.copy())) for v in init]
        opt = get_optimizer(name, ps, **kwargs)
        topt = getattr(torch.optim, TORCH_CLASSES[name])(tp, **kwargs)
        for t in range(20):
            for p, q, z in zip(ps, tp, noise[t]):
                p.grad[...] = _grad(p.value, z)
                q.grad = torch.from_numpy(_grad(q.detach().numpy(), z))
            opt.step()
            topt.step()
        for p, q in zip(ps, tp):
            tstate = topt.state[q]
            for key, buf in opt.state[p].items():
                np.testing.assert_allclose(buf, tstate[key].numpy(), rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("case", GRID[::3], ids=[_ids(c) for c in GRID[::3]])
def test_float32_stays_float32_in_place(case):
    name, kwargs = case
    init = _initial_values(np.float32)
    ps = [Parameter(f"p{i}", v.copy()) for i, v in enumerate(init)]
    arrays = [p.value for p in ps]
    grads = [p.grad for p in ps]
    opt = get_optimizer(name, ps, **kwargs)
    noise = _noise(5, np.float32)
    for t in range(5):
        for p, z in zip(ps, noise[t]):
            p.grad[...] = _grad(p.value, z)
        saved = [p.grad.copy() for p in ps]
        opt.step()
        for p, a, g, s in zip(ps, arrays, grads, saved):
            assert p.value is a and p.grad is g
            assert p.value.dtype == np.float32
            np.testing.assert_array_equal(p.grad, s)  # .grad is never modified
    for p in ps:
        for buf in opt.state[p].values():
            assert buf.dtype == np.float32 and buf.shape == p.shape
    assert not np.allclose(ps[0].value, init[0])


def test_float32_close_to_torch_float32():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        for name in OPTIMIZERS:
            kwargs = {"weight_decay": 0.01}
            final = list(_run(name, kwargs, n_steps=20, dtype=np.float32))[-1]
            for a, b in zip(*final):
                assert a.dtype == np.float32
                assert _rel(a, b) < 1e-4, name
    finally:
        torch.set_default_dtype(old)


@pytest.mark.parametrize("case", GRID, ids=[_ids(c) for c in GRID])
def test_no_allocation_per_step(case):
    """After the first step (which allocates the buffers) a step allocates no array."""
    name, kwargs = case
    g = make_rng(0)
    ps = [Parameter("w", g.standard_normal((200, 100)).astype(np.float32)),
          Parameter("b", g.standard_normal(100).astype(np.float32))]
    for p in ps:
        p.grad[...] = g.standard_normal(p.shape)
    opt = get_optimizer(name, ps, **kwargs)
    opt.step()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        for _ in range(3):
            opt.step()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak - base < 20_000  # one float32 temporary of w alone would be 80 kB


def test_scratch_slots_bounded():
    ps = [Parameter("w", np.zeros((3, 2)))]
    expected = {"sgd": 1, "adagrad": 1, "rmsprop": 1, "adam": 1, "adadelta": 2, "nadam": 2}
    for name, k in expected.items():
        opt = get_optimizer(name, ps)
        opt.step()
        assert [s.shape for s in opt._scratch[ps[0]]] == [(3, 2)] * k, name
        wd = get_optimizer(name, ps, weight_decay=0.1)
        wd.step()
        assert len(wd._scratch[ps[0]]) <= 2, name


def test_state_keyed_by_parameter_object():
    a = Parameter("same", np.ones(3))
    b = Parameter("same", np.ones(3))  # same name, different object
    opt = Adam([a, b], lr=0.1)
    assert opt.state == {}  # lazily allocated
    a.grad[...] = 1.0
    b.grad[...] = -1.0
    opt.step()
    assert set(opt.state) == {a, b} and len(opt.state) == 2
    assert opt.state[a]["exp_avg"] is not opt.state[b]["exp_avg"]
    np.testing.assert_allclose(opt.state[a]["exp_avg"], 0.1)
    np.testing.assert_allclose(opt.state[b]["exp_avg"], -0.1)
    np.testing.assert_allclose(a.value, 0.9)
    np.testing.assert_allclose(b.value, 1.1)
    assert opt.step_count == 1


def test_lr_settable_between_steps():
    p = Parameter("w", np.zeros(2))
    opt = SGD([p], lr=0.1)
    p.grad[...] = 1.0
    opt.step()
    opt.lr = 0.5
    opt.step()
    np.testing.assert_allclose(p.value, -0.6)
    assert opt.hyperparameters()["lr"] == 0.5
    with pytest.raises(ValueError, match="-1"):
        opt.lr = -1.0


def test_zero_grad_in_place():
    ps = [Parameter("w", np.ones((2, 2))), Parameter("b", np.ones(2), kind="bias")]
    for p in ps:
        p.grad[...] = 3.0
    grads = [p.grad for p in ps]
    opt = RMSprop(ps)
    opt.zero_grad()
    for p, g in zip(ps, grads):
        assert p.grad is g
        assert not p.grad.any()


def test_defaults_match_torch():
    import inspect
    ps = [Parameter("w", np.zeros(2))]
    skip = {"foreach", "differentiable", "fused", "capturable"}
    for name in OPTIMIZERS:
        ours = get_optimizer(name, ps).hyperparameters()
        tcls = getattr(torch.optim, TORCH_CLASSES[name])
        theirs = {k: v.default for k, v in inspect.signature(tcls.__init__).parameters.items()
                  if k not in skip | {"self", "params"}}
        assert set(ours) == set(theirs), name
        for k, v in theirs.items():
            assert ours[k] == (tuple(v) if isinstance(v, tuple) else v), (name, k)


def test_hyperparameters_rebuild_and_registry():
    ps = [Parameter("w", np.zeros(2))]
    assert OPTIMIZERS == ("sgd", "adagrad", "adadelta", "rmsprop", "adam", "adamw", "nadam",
                          "radam", "adamax")
    classes = dict(zip(OPTIMIZERS, (SGD, Adagrad, Adadelta, RMSprop, Adam, AdamW, NAdam, RAdam,
                                    Adamax)))
    for name, kwargs in GRID:
        opt = get_optimizer(name, ps, **kwargs)
        assert type(opt) is classes[name]
        hp = opt.hyperparameters()
        for k, v in kwargs.items():
            assert hp[k] == v
        clone = type(opt)(ps, **hp)
        assert clone.hyperparameters() == hp
    assert isinstance(get_optimizer("Adam", ps), Adam)
    opt = SGD(ps)
    assert get_optimizer(opt, ps) is opt
    assert isinstance(opt, Optimizer)


@pytest.mark.parametrize(
    ("name", "kwargs", "exc", "match"),
    [
        ("sgd", {"lr": -0.1}, ValueError, "-0.1"),
        ("sgd", {"momentum": -0.5}, ValueError, "-0.5"),
        ("sgd", {"weight_decay": -1e-3}, ValueError, "0.001"),
        ("sgd", {"nesterov": True}, ValueError, "momentum=0"),
        ("sgd", {"nesterov": True, "momentum": 0.9, "dampening": 0.1}, ValueError, "0.1"),
        ("sgd", {"lr": float("nan")}, ValueError, "nan"),
        ("sgd", {"lr": "0.1"}, TypeError, "0.1"),
        ("sgd", {"nesterov": "yes"}, TypeError, "yes"),
        ("adam", {"betas": (1.0, 0.999)}, ValueError, "1.0"),
        ("adam", {"betas": (0.9, -0.1)}, ValueError, "-0.1"),
        ("adam", {"betas": 0.9}, TypeError, "0.9"),
        ("adam", {"eps": -1e-8}, ValueError, "1e-08"),
        ("nadam", {"betas": (0.9, 1.5)}, ValueError, "1.5"),
        ("nadam", {"momentum_decay": -0.004}, ValueError, "0.004"),
        ("nadam", {"eps": -1.0}, ValueError, "-1.0"),
        ("adagrad", {"lr_decay": -0.1}, ValueError, "-0.1"),
        ("adagrad", {"initial_accumulator_value": -1.0}, ValueError, "-1.0"),
        ("adagrad", {"eps": -1.0}, ValueError, "-1.0"),
        ("adadelta", {"rho": 1.5}, ValueError, "1.5"),
        ("adadelta", {"eps": -1e-6}, ValueError, "1e-06"),
        ("rmsprop", {"alpha": -0.9}, ValueError, "-0.9"),
        ("rmsprop", {"momentum": -0.9}, ValueError, "-0.9"),
        ("rmsprop", {"eps": -1.0}, ValueError, "-1.0"),
        ("rmsprop", {"foreach": True}, TypeError, "foreach"),
        ("adam", {"fused": True}, TypeError, "fused"),
    ],
)
def test_bad_hyperparameters(name, kwargs, exc, match):
    ps = [Parameter("w", np.zeros(2))]
    with pytest.raises(exc, match=match):
        get_optimizer(name, ps, **kwargs)


def test_bad_names_and_params():
    ps = [Parameter("w", np.zeros(2))]
    with pytest.raises(ValueError, match="adamx.*sgd"):
        get_optimizer("adamx", ps)
    with pytest.raises(TypeError, match="42"):
        get_optimizer(42, ps)
    with pytest.raises(ValueError, match="empty"):
        SGD([])
    with pytest.raises(TypeError, match="ndarray"):
        SGD([np.zeros(2)])
    with pytest.raises(ValueError, match="more than once"):
        SGD(ps + ps)
    with pytest.raises(ValueError, match="other parameters"):
        get_optimizer(SGD(ps), [Parameter("v", np.zeros(2))])
