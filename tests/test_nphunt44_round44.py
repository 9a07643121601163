"""Round 44 (nphunt44): torch's own keys of a parameter group, torch's symmetric bounds of
``uniform``, and the engine's agreement with torch where earlier tests did not look."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import depthlab as dl
from depthlab import optimizers as O
from depthlab.parameter import Parameter

torch = pytest.importorskip("torch")


def _params(n: int = 3, shape: tuple[int, ...] = (2, 2)) -> list[Parameter]:
    return [Parameter(f"p{i}", np.full(shape, float(i + 1))) for i in range(n)]


@pytest.mark.parametrize("name", ["sgd", "adam", "radam", "rmsprop"])
def test_group_keys_of_your_own_are_kept_as_torch_keeps_them(name: str) -> None:
    """torch keeps any other key of a parameter group (``{"params": ..., "name": "enc"}``,
    read by user code, never by the update); it was "TypeError: unknown hyperparameter(s)
    ['name']". The key is read and set through ``param_groups``, listed in ``state_dict`` and
    restored by ``load_state_dict``; the update is torch's."""
    ps = _params()
    opt = dl.optimizer(name, [{"params": ps[:1], "name": "enc", "lr_scale": 0.5},
                              {"params": ps[1:], "lr": 0.1}], lr=0.01)
    tps = [torch.nn.Parameter(torch.from_numpy(p.value.copy())) for p in ps]
    tcls = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "radam": torch.optim.RAdam,
            "rmsprop": torch.optim.RMSprop}[name]
    topt = tcls([{"params": tps[:1], "name": "enc", "lr_scale": 0.5},
                 {"params": tps[1:], "lr": 0.1}], lr=0.01)
    assert opt.param_groups[0]["name"] == topt.param_groups[0]["name"] == "enc"
    assert opt.param_groups[0]["lr_scale"] == 0.5 and "name" not in opt.param_groups[1]
    opt.param_groups[1]["name"] = "dec"
    topt.param_groups[1]["name"] = "dec"
    rng = np.random.default_rng(0)
    for _ in range(5):
        for p, tp in zip(ps, tps):
            p.grad = rng.normal(size=p.value.shape)
            tp.grad = torch.from_numpy(p.grad.copy())
        opt.step()
        topt.step()
    for p, tp in zip(ps, tps):
        np.testing.assert_allclose(p.value, tp.detach().numpy(), rtol=1e-13, atol=1e-15)
    saved = pickle.loads(pickle.dumps(opt.state_dict()))
    assert [g.get("name") for g in saved["param_groups"]] == ["enc", "dec"]
    assert saved["param_groups"][0]["lr_scale"] == 0.5
    fresh = dl.optimizer(name, [{"params": ps[:1]}, {"params": ps[1:], "lr": 0.1}], lr=0.01)
    fresh.load_state_dict(saved)
    assert [g.get("name") for g in fresh.param_groups] == ["enc", "dec"]
    assert fresh.param_groups[0]["lr_scale"] == 0.5
    del fresh.param_groups[0]["lr_scale"]
    assert "lr_scale" not in fresh.param_groups[0] and "lr_scale" not in dict(
        fresh.param_groups[0])


def test_group_key_of_a_one_group_optimizer_and_add_param_group() -> None:
    """A plain parameter list is one group; torch lets ``param_groups[0]["name"] = ...`` be
    set there too, and it stays with that group when a second group is added."""
    ps = _params()
    opt = O.SGD(ps[:2], lr=0.1, momentum=0.9)
    opt.param_groups[0]["name"] = "body"
    assert opt.state_dict()["param_groups"][0]["name"] == "body"
    opt.add_param_group({"params": ps[2:], "name": "head", "lr": 0.5})
    assert [g["name"] for g in opt.param_groups] == ["body", "head"]
    assert opt.param_groups[1]["lr"] == 0.5


@pytest.mark.parametrize("key, words", [
    ("betas", "no hyperparameter of 'sgd'"),             # another optimizer's: ignored by SGD
    ("momentun", "did you mean 'momentum'"),             # a typo
    ("nesterof", "did you mean 'nesterov'"),
    ("foreach", "how torch runs the update"),            # torch's implementation flag
    ("step", "state_dict group layout"),                 # depthlab's own group key
])
def test_group_keys_that_are_mistakes_stay_refused(key: str, words: str) -> None:
    """A key that is a hyperparameter of another optimizer, a likely typo of one, torch's
    implementation flags and depthlab's ``step`` are refused in one line, as before, in a
    group dict (TypeError) and set on ``param_groups`` (KeyError); nothing is added."""
    ps = _params()
    opt = O.SGD([{"params": ps[:1]}], lr=0.1)
    with pytest.raises(TypeError, match=rf"unknown hyperparameter.*{key!r}.*{words}"):
        opt.add_param_group({"params": ps[1:], key: 0.9})
    assert len(opt.param_groups) == 1
    with pytest.raises(KeyError, match=words):
        opt.param_groups[0][key] = 0.9
    assert key not in opt.param_groups[0]


def test_uniform_takes_torchs_symmetric_bounds() -> None:
    """``dl.initializer("uniform", a=-b, b=b)`` is torch's ``uniform_(w, -b, b)``
    (U(-b, b), Var b^2/3); it was "TypeError: unknown argument 'a'". torch's default U(0, 1)
    (mean 1/2) is refused naming it: depthlab's ``uniform`` is the zero-mean U(-limit,
    limit), U(-1, 1) by default, as the README says."""
    init = dl.initializer("uniform", a=-0.05, b=0.05)
    w = init((400, 300), 0, "float64")
    assert np.abs(w).max() <= 0.05 and w.max() > 0.0499 and w.min() < -0.0499
    assert init.variance(400, 300) == pytest.approx(0.05**2 / 3)
    assert w.var() == pytest.approx(0.05**2 / 3, rel=0.02)
    tw = torch.nn.init.uniform_(torch.empty(300, 400, dtype=torch.float64), -0.05, 0.05)
    assert w.var() == pytest.approx(float(tw.var()), rel=0.03)
    np.testing.assert_array_equal(w, dl.initializer("uniform", limit=0.05)((400, 300), 0,
                                                                           "float64"))
    d = dl.initializer("uniform")((300, 300), 0, "float64")
    assert d.min() < -0.99 and d.max() > 0.99  # U(-1, 1), not torch's U(0, 1)
    with pytest.raises(ValueError, match=r"a=0, b=1 \(torch's uniform_ default U\(0, 1\)"):
        dl.initializer("uniform", a=0, b=1)
    with pytest.raises(ValueError, match="a and b together"):
        dl.initializer("uniform", b=0.1)
    with pytest.raises(ValueError, match="give one of them"):
        dl.initializer("uniform", limit=2.0, a=-0.1, b=0.1)


@pytest.mark.parametrize("n", [20_000, 100_000, 1_000_000])
def test_float32_sum_of_squares_is_float64_accurate(n: int) -> None:
    """A float32 MSE (and the L2 penalty) over more than 8192 entries was the float64 sum of
    float32 dots of 8192-entry chunks: 2.6e-8 (2e4 entries), 2.3e-8 (1e5), 1.9e-9 (1e6) relative
    off the float64 sum of the same float32 errors with this host's OpenBLAS (the round-15
    test allows 1e-9). Now float64 sums of 64-entry row dots: 3e-10 to 3e-11."""
    from depthlab.regularizers import penalty

    g = np.random.default_rng(0)
    z = (g.standard_normal((n, 1)) * 3 + 1).astype(np.float32)
    y = g.standard_normal(n).astype(np.float32)
    d = (z[:, 0] - y).astype(np.float64)  # float32 differences, as the loss takes them
    exact = float(np.dot(d, d)) / n
    got = dl.loss("mse").forward(z, y)
    assert abs(got - exact) / exact < 1e-9
    w = Parameter("w", (z[:, 0] - y).reshape(-1, 100))
    exact_l2 = 0.5 * float(np.dot(d, d))
    assert abs(penalty([w], l2=0.5) - exact_l2) / exact_l2 < 1e-9


@pytest.mark.parametrize("layer", ["Dropout", "AlphaDropout", "sigmoid", "gelu", "softmax",
                                   "tanh", "relu", "Residual"])
@pytest.mark.parametrize("dtype", [np.int64, np.bool_])
def test_standalone_layers_take_integers_as_float64(layer: str, dtype) -> None:
    """A layer used on its own takes integers and booleans as float64 (torch's float ops
    promote them): ``Dropout``/``AlphaDropout``/``Activation("sigmoid")`` of integers was
    NumPy's "Cannot cast ufunc ... output from dtype('float64') to dtype('int64')",
    ``Activation("tanh")`` of booleans float16 and ``Activation("relu")`` of ints int64.
    Values and gradients are those of the float64 input."""
    from depthlab import layers as L

    def build():
        if layer in ("Dropout", "AlphaDropout"):
            return getattr(L, layer)(0.5, rng=3)
        if layer == "Residual":
            return L.Residual([L.Activation("tanh")])
        return L.Activation(layer)

    x = (np.arange(12).reshape(3, 4) % 3 - 1).astype(dtype)
    grad = np.linspace(-1.0, 1.0, 12).reshape(3, 4)
    got, ref = build(), build()
    y, y_ref = got.forward(x), ref.forward(x.astype(np.float64))
    assert y.dtype == np.float64
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(got.backward(grad.copy()), ref.backward(grad.copy()))
    if layer not in ("Dropout", "AlphaDropout", "Residual"):
        fn = dl.activation(layer)
        np.testing.assert_array_equal(fn(x), y_ref)
        np.testing.assert_array_equal(fn(x.tolist()), y_ref)
        t = torch.from_numpy(x.astype(np.float64))
        want = (torch.softmax(t, dim=1) if layer == "softmax"
                else getattr(torch.nn.functional, layer)(t))
        np.testing.assert_allclose(y, want.numpy(), rtol=1e-15, atol=1e-16)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_softsign_derivative_at_infinity_is_torchs(dtype) -> None:
    """softsign(+-inf) is inf / inf = NaN in depthlab and torch; its derivative was 0 there
    (1 / (1 + |s|)^2), torch's NaN. Now NaN, and unchanged (to the bit) at every finite
    input, 0 and the largest floats included."""
    fn = dl.activation("softsign")
    finite = np.array([0.0, -0.0, 1e-300, -2.5, 3.0, 1e8, -1e30, 1e38], dtype=dtype)
    s = np.concatenate([finite, np.array([np.inf, -np.inf, np.nan], dtype=dtype)])
    with np.errstate(all="ignore"):
        a = fn.forward(s)
        d = fn.derivative(s, a)
        g = fn.backward(s, a, np.ones_like(s))
        old = 1.0 / (1.0 + np.abs(finite)) ** 2
    st = torch.from_numpy(s.copy()).requires_grad_(True)
    torch.nn.functional.softsign(st).backward(torch.ones_like(st))
    assert np.isnan(d[-3:]).all() and np.isnan(st.grad.numpy()[-3:]).all()
    assert np.isnan(g[-3:]).all()
    np.testing.assert_array_equal(d[:-3], old.astype(dtype))
    np.testing.assert_array_equal(g[:-3], old.astype(dtype))


@pytest.mark.parametrize("optname, cycle", [("SGD", True), ("Adam", True), ("SGD", False)])
def test_one_cycle_group_keys_are_torchs_and_read_each_step(optname: str, cycle: bool) -> None:
    """torch's OneCycleLR writes ``max_lr``, ``min_lr`` (and with ``cycle_momentum``
    ``max_momentum``, ``base_momentum``) into each parameter group and reads them at each
    step; CyclicLR writes its momentum bounds. They were missing (``KeyError: 'max_lr'``).
    A ``max_lr`` set mid-run steers the rest of the schedule as in torch, and the keys
    travel with ``opt.state_dict()``."""
    ps = _params(2, (2,))
    tps = [torch.nn.Parameter(torch.ones(2, dtype=torch.float64)) for _ in ps]
    kw = {"lr": 0.1, "momentum": 0.9} if optname == "SGD" else {"lr": 0.01}
    opt = getattr(O, optname)([{"params": ps[:1]}, {"params": ps[1:]}], **kw)
    topt = getattr(torch.optim, optname)([{"params": tps[:1]}, {"params": tps[1:]}], **kw)
    skw = {"max_lr": [1.0, 0.5], "total_steps": 40, "cycle_momentum": cycle}
    sched = O.OneCycleLR(opt, **skw)
    tsched = torch.optim.lr_scheduler.OneCycleLR(topt, **skw)
    ignore = {"foreach", "fused", "differentiable", "capturable", "params"}
    for g, tg in zip(opt.param_groups, topt.param_groups):
        assert set(g) - {"params"} == set(tg) - ignore - ({"decoupled_weight_decay"} - set(g))
        for key in ("max_lr", "min_lr", "initial_lr", "max_momentum", "base_momentum"):
            assert (key in g) == (key in tg) and g.get(key) == tg.get(key), key
    for step in range(39):
        if step == 10:
            opt.param_groups[0]["max_lr"] = topt.param_groups[0]["max_lr"] = 2.0
            opt.param_groups[1]["min_lr"] = topt.param_groups[1]["min_lr"] = 1e-3
        for p, tp in zip(ps, tps):
            p.grad = np.ones(2)
            tp.grad = torch.ones(2, dtype=torch.float64)
        opt.step()
        topt.step()
        sched.step()
        tsched.step()
        assert sched.get_last_lr() == tsched.get_last_lr(), step
    saved = pickle.loads(pickle.dumps(opt.state_dict()))
    assert saved["param_groups"][0]["max_lr"] == 2.0
    if cycle:
        c_opt = getattr(O, optname)(_params(1, (2,)), **kw)
        t_opt = getattr(torch.optim, optname)([torch.nn.Parameter(torch.ones(2))], **kw)
        O.CyclicLR(c_opt, 0.01, 0.1)
        torch.optim.lr_scheduler.CyclicLR(t_opt, 0.01, 0.1)
        for key in ("max_momentum", "base_momentum"):
            assert c_opt.param_groups[0][key] == t_opt.param_groups[0][key]
