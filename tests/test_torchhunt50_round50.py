"""Round 50 (torchhunt50): dlt.probe / dlt.Watch / dlt.predict on models nobody tried --
activation modules after a layer (PReLU per channel, RReLU, Hardswish, Hardsigmoid, the
shrinks, Threshold, CELU, Softplus(beta, threshold), LogSigmoid, GELU(tanh), ReLU6) against a
direct float64 autograd computation of every row, InstanceNorm given one position per
channel (a one-line refusal naming the module), a mixture of experts whose router leaves an
expert empty, ``LSTM(proj_size=...)``."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import depthlab.torch as dlt  # noqa: E402

D = torch.float64
CE = nn.CrossEntropyLoss()
PCTS = (2, 15, 50, 85, 98)


def _table(df) -> dict:
    return {(m, q): v for m, q, v in zip(df.module, df.quantity, df.value)}


def _pooled(ts: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.detach().double().reshape(-1) for t in ts])


def _spread(prefix: str, v: torch.Tensor) -> dict:
    """``{prefix_mean, prefix_std (population), prefix_pK}`` of the entries ``v``."""
    row = {f"{prefix}_mean": float(v.mean()), f"{prefix}_std": float(v.std(correction=0))}
    row.update({f"{prefix}_p{p}": float(np.percentile(v.numpy(), p)) for p in PCTS})
    return row


def _derivative(act: nn.Module, s: torch.Tensor) -> torch.Tensor:
    """``f'(s)`` of the activation module by autograd (on a copy: RReLU's draws aside)."""
    leaf = s.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(copy.deepcopy(act)(leaf).sum(), leaf)
    return g


def _fractions(act: nn.Module, s: torch.Tensor, kind: str | None, sup: float) -> dict:
    """README's definitions: ``saturated_frac`` (bounded: ``|f'(s)| < 5% sup|f'|``, ReLU6
    only for ``s > 0``), ``inactive_frac`` (ReLU family: ``s <= 0``), ``dead_frac`` (units,
    axis 1, whose ``f'(s)`` is 0 on every example)."""
    d = _derivative(act, s).abs()
    row = {}
    if kind in ("bounded", "relu6"):
        sat = d < 0.05 * sup
        row["saturated_frac"] = float((sat & (s > 0) if kind == "relu6" else sat).double().mean())
    if kind in ("relu", "relu6"):
        row["inactive_frac"] = float((s <= 0).double().mean())
    units = (d == 0).movedim(1, -1).reshape(-1, s.shape[1])
    row["dead_frac"] = float(units.all(0).double().mean())
    return row


def reference(model: nn.Sequential, x, y, layers: dict[str, str | None], kinds: dict) -> dict:
    """``{(name, quantity): value}`` by float64 autograd for the layers of an ``nn.Sequential``
    (``layers``: layer index -> the index of its activation module or None): ``pre_*`` of its
    output ``s``, ``grad_pre_std/absmean`` of ``dL/ds``, ``weight_*`` of its weight, and of
    its activation ``act_*`` (the module's output) and the fractions of its input."""
    outs, ins, acts = {}, {}, {}
    hooks = [model[int(n)].register_forward_hook(lambda m, i, o, n=n: outs.update({n: o}))
             for n in layers]
    for n, a in layers.items():
        if a is not None:
            hooks.append(model[int(a)].register_forward_hook(
                lambda m, i, o, n=n: (ins.update({n: i[0].detach().clone()}),
                                      acts.update({n: o.detach().clone()})) and None))
    try:
        loss = CE(model(x), y)
    finally:
        for h in hooks:
            h.remove()
    ws = [model[int(n)].weight for n in layers]
    grads = torch.autograd.grad(loss, [outs[n] for n in layers] + ws)
    table = {("", "loss"): float(loss.detach())}
    for k, n in enumerate(layers):
        row = _spread("pre", _pooled([outs[n]]))
        g, wg = _pooled([grads[k]]), _pooled([grads[len(layers) + k]])
        row.update(grad_pre_std=float(g.std(correction=0)), grad_pre_absmean=float(g.abs().mean()),
                   weight_std=float(_pooled([ws[k]]).std(correction=0)),
                   weight_grad_std=float(wg.std(correction=0)),
                   weight_grad_absmean=float(wg.abs().mean()))
        a = layers[n]
        if a is not None:
            row.update(_spread("act", _pooled([acts[n]])))
            row.update(_fractions(model[int(a)], ins[n], *kinds[n]))
        table.update({(n, q): v for q, v in row.items()})
    return table


ACTIVATIONS = {  # name: (module, README family, sup |f'|)
    "prelu_per_channel": (lambda: nn.PReLU(16), "relu", None),
    "prelu": (lambda: nn.PReLU(), "relu", None),
    "rrelu_eval": (lambda: nn.RReLU(), "relu", None),
    "hardswish": (nn.Hardswish, "relu", 1.5),
    "hardsigmoid": (nn.Hardsigmoid, "bounded", 1 / 6),
    "hardshrink": (lambda: nn.Hardshrink(0.5), None, 1.0),
    "softshrink": (lambda: nn.Softshrink(0.5), None, 1.0),
    "tanhshrink": (nn.Tanhshrink, None, 1.0),
    "threshold": (lambda: nn.Threshold(0.1, -1.0), None, 1.0),
    "threshold_at_0": (lambda: nn.Threshold(0.0, 0.0), "relu", 1.0),
    "celu": (lambda: nn.CELU(0.5), "relu", 1.0),
    "softplus_beta2_threshold5": (lambda: nn.Softplus(beta=2, threshold=5), None, 1.0),
    "logsigmoid": (nn.LogSigmoid, None, 1.0),
    "gelu_tanh": (lambda: nn.GELU(approximate="tanh"), "relu", None),
    "relu6": (nn.ReLU6, "relu6", 1.0),
}


def _activation_net(name: str, conv: bool) -> tuple[nn.Sequential, torch.Tensor, torch.Tensor]:
    make = ACTIVATIONS[name][0]
    torch.manual_seed(1)
    if conv:
        m = nn.Sequential(nn.Conv2d(3, 16, 3), make(), nn.Conv2d(16, 16, 3), make(),
                          nn.Flatten(), nn.Linear(16 * 4 * 4, 5)).double()
        x = 2 * torch.randn(6, 3, 8, 8, dtype=D)
    else:
        m = nn.Sequential(nn.Linear(10, 16), make(), nn.Linear(16, 16), make(),
                          nn.Linear(16, 5)).double()
        x = 3 * torch.randn(20, 10, dtype=D)
    with torch.no_grad():  # learned slopes of both signs, unequal per channel
        for mod in m:
            if isinstance(mod, nn.PReLU):
                mod.weight.uniform_(-0.5, 0.9)
    if name == "rrelu_eval":
        m.eval()
    return m, x, torch.randint(0, 5, (x.shape[0],))


@pytest.mark.parametrize("conv", [False, True], ids=["linear", "conv"])
@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_activation_rows_equal_float64_autograd(name: str, conv: bool) -> None:
    """Every row of a layer followed by each activation module (pre_*, act_*, fractions,
    gradient and weight rows) equals the float64 autograd computation under README's
    definitions; no row beyond them."""
    m, x, y = _activation_net(name, conv)
    _, kind, sup = ACTIVATIONS[name]
    if sup is None:  # PReLU/RReLU: max(1, |slopes|); GELU(tanh): its grid maximum
        a = m[1]
        sup = (max(1.0, float(a.weight.detach().abs().max())) if isinstance(a, nn.PReLU)
               else float(_derivative(a, torch.linspace(-30, 30, 60001, dtype=D)).abs().max()))
    last = "5" if conv else "4"
    kinds = {"0": (kind, sup), "2": (kind, sup)}
    ref = reference(m, x, y, {"0": "1", "2": "3", last: None}, kinds)
    got = _table(dlt.probe(m, x, y, CE))
    for key, v in ref.items():
        assert math.isclose(got[key], v, rel_tol=1e-9, abs_tol=1e-14), (key, got.get(key), v)
    layer_rows = {k for k in got if k[0]}
    assert layer_rows == set(ref) - {("", "loss")}, layer_rows ^ (set(ref) - {("", "loss")})


# ---------------------------------------------------------------------------------------------
# a norm given one value per channel: one line naming the module

def _instance_net(**kw) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.InstanceNorm2d(8, **kw), nn.ReLU(),
                         nn.Flatten(), nn.Linear(8, 4))


@pytest.mark.parametrize("kw,mode", [({}, "train"), ({}, "eval"), ({"affine": True}, "train"),
                                     ({"track_running_stats": True}, "train")])
@pytest.mark.parametrize("call", ["probe", "predict"])
def test_instance_norm_given_one_position_is_refused_naming_it(kw, mode, call) -> None:
    """A 3x3 image into a 3x3 conv leaves the InstanceNorm one position per channel: torch's
    bare 'Expected more than 1 spatial element when training' named neither the module nor
    x; now one line naming the InstanceNorm, the input size and the remedy."""
    m = getattr(_instance_net(**kw), mode)()
    x, y = torch.randn(2, 3, 3, 3), torch.tensor([0, 1])
    fn = dlt.probe if call == "probe" else dlt.predict
    with pytest.raises(ValueError) as info:
        fn(m, x, y, CE)
    msg = str(info.value)
    assert "\n" not in msg
    assert "InstanceNorm2d '1'" in msg and "one position per channel" in msg
    assert "torch.Size([2, 8, 1, 1])" in msg and "2 or more positions" in msg


def test_instance_norm_on_running_statistics_takes_one_position() -> None:
    """In eval mode with running statistics torch normalizes one position fine: probed."""
    m = _instance_net(track_running_stats=True).eval()
    got = _table(dlt.probe(m, torch.randn(2, 3, 3, 3), torch.tensor([0, 1]), CE))
    assert ("0", "act_std") in got and ("4", "grad_pre_std") in got


def test_batchnorm_given_one_example_still_names_it() -> None:
    m = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 4))
    with pytest.raises(ValueError, match=r"^BatchNorm1d '1' is in training mode, .*one value "
                       r"per channel .*expected a batch of 2 or more examples"):
        dlt.probe(m, torch.randn(1, 6), torch.tensor([0]), CE)


# ---------------------------------------------------------------------------------------------
# F.rrelu in a forward; an operation with an activation's node but no module's settings

class _FunctionalRReLU(nn.Module):
    """``F.rrelu`` (eval: ``training=False``) or the ``nn.RReLU`` module after each layer."""

    def __init__(self, training: bool = False, module: bool = False) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Linear(16, 32), nn.Linear(32, 32), nn.Linear(32, 5)
        self.training_slopes = training
        self.act = nn.RReLU(0.1, 0.3) if module else None

    def forward(self, x):
        def f(h):
            if self.act is not None:
                return self.act(h)
            return nn.functional.rrelu(h, 0.1, 0.3, training=self.training_slopes)
        return self.c(f(self.b(f(self.a(x)))))


def _rrelu_pair():
    torch.manual_seed(0)
    functional = _FunctionalRReLU().double()
    torch.manual_seed(0)
    twin = _FunctionalRReLU(module=True).double().eval()  # RReLU's eval: the mean slope
    g = torch.Generator().manual_seed(3)
    x = torch.randn(24, 16, generator=g, dtype=D)
    return functional, twin, x, torch.randint(0, 5, (24,), generator=g)


def test_functional_rrelu_in_eval_has_the_modules_rows() -> None:
    """``F.rrelu(h, 0.1, 0.3, training=False)`` had no act_*/inactive/dead rows; now the
    table of the twin with ``nn.RReLU(0.1, 0.3).eval()`` (identical in float64), and
    ``dlt.predict`` gives the twin's prediction."""
    functional, twin, x, y = _rrelu_pair()
    got, want = _table(dlt.probe(functional, x, y, CE)), _table(dlt.probe(twin, x, y, CE))
    assert ("a", "act_std") in got and ("b", "inactive_frac") in got
    assert got == want
    p, q = dlt.predict(functional, x, y, CE), dlt.predict(twin, x, y, CE)
    assert np.allclose(p.predicted.to_numpy(), q.predicted.to_numpy(), rtol=1e-12,
                       equal_nan=True)


def test_functional_rrelu_in_eval_watch_frame_equals_probe() -> None:
    functional, _, x, y = _rrelu_pair()
    want = _table(dlt.probe(functional, x, y, CE))
    with dlt.Watch(functional, every=1, theory=False) as w:
        loss = CE(functional(x), y)
        loss.backward()
        w.step(loss)
    frame = w.frame()
    got = _table(frame[frame.step == 0])
    for key in [("a", "act_std"), ("a", "act_mean"), ("b", "inactive_frac"), ("b", "dead_frac")]:
        assert math.isclose(got[key], want[key], rel_tol=1e-9), key


def test_functional_rrelu_in_training_mode_is_said_not_measured() -> None:
    """Training-mode draws cannot be computed again from the layer output: no act rows (the
    other rows exact), and ``dlt.predict`` refuses in one line naming F.rrelu and the remedy
    (it said the layer's own previous layer was 'a layer that is not the previous one')."""
    torch.manual_seed(0)
    m = _FunctionalRReLU(training=True).double()
    x, y = torch.randn(24, 16, dtype=D), torch.randint(0, 5, (24,))
    got = _table(dlt.probe(m, x, y, CE))
    assert ("a", "pre_std") in got and ("a", "act_std") not in got
    with pytest.raises(ValueError) as info:
        dlt.predict(m, x, y, CE)
    msg = str(info.value)
    assert "F.rrelu in training mode" in msg and "nn.RReLU" in msg and "\n" not in msg
    assert "not the previous one" not in msg


class _Floor(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(8, 16), nn.Linear(16, 4)

    def forward(self, x):
        return self.b(self.a(x).clamp(min=1e-3))


def test_predict_names_a_clamp_that_is_no_activation_as_an_operation() -> None:
    """``h.clamp(min=1e-3)`` between two layers (no activation's bounds): the refusal said it
    was applied to 'a layer that is not the previous one'; now it names the operation."""
    torch.manual_seed(0)
    with pytest.raises(ValueError) as info:
        dlt.predict(_Floor(), torch.randn(32, 8))
    msg = str(info.value)
    assert "'Clamp'" in msg and "not the previous one" not in msg and "\n" not in msg


# ---------------------------------------------------------------------------------------------
# F.prelu(h, self.slope) in a forward

class _PReLUNet(nn.Module):
    """Two layers, each followed by a per-channel PReLU: the module, or ``F.prelu`` of the
    same module's slope (its parameter, not the module, called)."""

    def __init__(self, conv: bool, module: bool) -> None:
        super().__init__()
        c = 12
        self.a = nn.Conv2d(3, c, 3) if conv else nn.Linear(16, c)
        self.b = nn.Conv2d(c, c, 3) if conv else nn.Linear(c, c)
        self.c = nn.Linear(c * 16 if conv else c, 5)
        self.pa, self.pb, self.module = nn.PReLU(c), nn.PReLU(c), module
        with torch.no_grad():  # unequal slopes of both signs
            self.pa.weight.uniform_(-0.5, 0.9)
            self.pb.weight.uniform_(-0.5, 0.9)

    def forward(self, x):
        if self.module:
            h = self.pb(self.b(self.pa(self.a(x))))
        else:
            h = nn.functional.prelu(self.b(nn.functional.prelu(self.a(x), self.pa.weight)),
                                    self.pb.weight)
        return self.c(h.flatten(1))


def _prelu_pair(conv: bool):
    torch.manual_seed(0)
    functional = _PReLUNet(conv, module=False).double()
    torch.manual_seed(0)
    twin = _PReLUNet(conv, module=True).double()
    g = torch.Generator().manual_seed(5)
    x = torch.randn(*((12, 3, 8, 8) if conv else (12, 16)), generator=g, dtype=D)
    return functional, twin, x, torch.randint(0, 5, (12,), generator=g)


@pytest.mark.parametrize("conv", [False, True], ids=["linear", "conv"])
def test_functional_prelu_of_a_parameter_has_the_modules_rows(conv: bool) -> None:
    """``F.prelu(h, self.pa.weight)`` had no act_*/inactive/dead rows; now the table of the
    twin calling the PReLU modules (identical in float64; dead_frac per channel with each
    channel's own slope)."""
    functional, twin, x, y = _prelu_pair(conv)
    got = _table(dlt.probe(functional, x, y, CE))
    assert ("a", "act_std") in got and ("b", "dead_frac") in got
    assert got == _table(dlt.probe(twin, x, y, CE))


def test_functional_prelu_watch_follows_the_trained_slope() -> None:
    """A Watch over 3 SGD steps (the slopes trained, lr 0.5): each frame equals dlt.probe on
    that step's weights (the stand-in reads the live slope, not the first record's)."""
    functional, _, x, y = _prelu_pair(False)
    opt = torch.optim.SGD(functional.parameters(), lr=0.5)
    states = []
    with dlt.Watch(functional, every=1, theory=False) as w:
        for _ in range(3):
            states.append(copy.deepcopy(functional))
            opt.zero_grad()
            loss = CE(functional(x), y)
            loss.backward()
            w.step(loss)
            opt.step()
    frame = w.frame()
    assert not torch.equal(states[0].pa.weight, states[2].pa.weight)
    for k, state in enumerate(states):
        want = _table(dlt.probe(state, x, y, CE))
        got = _table(frame[frame.step == k])
        for key in [("a", "act_mean"), ("a", "act_std"), ("b", "act_std"),
                    ("a", "inactive_frac"), ("b", "dead_frac")]:
            assert math.isclose(got[key], want[key], rel_tol=1e-9, abs_tol=1e-15), (k, key)
