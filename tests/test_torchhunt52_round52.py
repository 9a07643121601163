"""torchhunt52 (round 52): dlt.probe / dlt.Watch on models and loops not shown before.

No bug was found in these cases; each test pins the behaviour against a direct float64
autograd computation (or direct norms of the weights), so that a later change that breaks it
fails here:

* a forward that changes a layer's output in place after the layer (``h.mul_(3)``,
  ``h[:, :4] = 0``, ``h += pos``): ``pre_*`` are of the output as the layer gave it and
  ``grad_pre_*`` of ``dL/d(that output)``, in ``dlt.probe`` and in a ``Watch``;
* ``update_ratio`` pooled over a 2-layer LSTM's weights and a MultiheadAttention's
  ``in_proj_weight`` (SGD with momentum, ``every=5``): ``||W_n - W_{n-1}|| / ||W_{n-1}||`` over
  the module's weights together, ``W_{n-1}`` the weights at the previous ``watch.step``;
* a layer frozen and run under ``torch.no_grad()`` for two steps, then unfrozen: no gradient
  rows and ``update_ratio`` 0 while frozen, the autograd values after;
* a ``Watch`` with dropout, training-mode BatchNorm, percentiles and its theory run leaves the
  losses, the parameters and the torch, NumPy and Python random streams as without it.
"""

from __future__ import annotations

import copy
import random

import numpy as np
import pytest
import torch
from torch import nn

import depthlab.torch as dlt

CE = nn.CrossEntropyLoss()
D = torch.float64


def _std(t: torch.Tensor) -> float:
    return float(t.double().std(unbiased=False))


def _rows(df, step: int | None = None) -> dict:
    """``{(module, quantity): value}`` of one step (all steps when ``step`` is None)."""
    if step is not None:
        df = df[df.step == step]
    return {(m, q): float(v) for m, q, v in zip(df.module, df.quantity, df.value)}


# ---------------------------------------------------------------------------------------------
# a layer's output changed in place after the layer


class _InPlaceAfter(nn.Module):
    def __init__(self, kind: str) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.kind = kind
        self.a, self.b, self.c = nn.Linear(10, 16), nn.Linear(16, 16), nn.Linear(16, 3)
        self.pos = nn.Parameter(torch.randn(16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.a(x)
        if self.kind == "mul_":
            h.mul_(3.0)
        elif self.kind == "setitem":
            h[:, :4] = 0
        else:
            h += self.pos
        h2 = self.b(torch.tanh(h))
        h2.mul_(0.5)
        return self.c(torch.relu(h2))


def _in_place_reference(model: _InPlaceAfter, x: torch.Tensor, y: torch.Tensor) -> dict:
    """The same forward written out of place in float64: the layers' own outputs kept."""
    m = copy.deepcopy(model).to(D)
    s1 = m.a(x.to(D))
    s1.retain_grad()
    h = s1
    if m.kind == "mul_":
        h = h * 3.0
    elif m.kind == "setitem":
        h = torch.cat([torch.zeros_like(h[:, :4]), h[:, 4:]], 1)
    else:
        h = h + m.pos
    s2 = m.b(torch.tanh(h))
    s2.retain_grad()
    CE(m.c(torch.relu(s2 * 0.5)), y).backward()
    out = {}
    for name, s in (("a", s1), ("b", s2)):
        out[(name, "pre_mean")] = float(s.detach().mean())
        out[(name, "pre_std")] = _std(s.detach())
        out[(name, "grad_pre_std")] = _std(s.grad)
        out[(name, "grad_pre_absmean")] = float(s.grad.abs().mean())
    for name in ("a", "b", "c"):
        w = getattr(m, name).weight
        out[(name, "weight_grad_std")] = _std(w.grad)
    return out


@pytest.mark.parametrize("kind", ["mul_", "setitem", "add_"])
def test_output_changed_in_place_after_the_layer(kind: str) -> None:
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(32, 10, generator=g), torch.randint(0, 3, (32,), generator=g)
    model = _InPlaceAfter(kind)
    got = _rows(dlt.probe(model, x, y, CE))
    want = _in_place_reference(model, x, y)
    for key, v in want.items():
        assert got[key] == pytest.approx(v, rel=1e-5, abs=1e-12), key

    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    refs = {}
    with dlt.Watch(model, every=1, out=None, theory=False) as watch:
        for step in range(2):
            refs[step] = _in_place_reference(model, x, y)
            opt.zero_grad()
            loss = CE(model(x), y)
            loss.backward()
            watch.step(loss)
            opt.step()
    frame = watch.frame()
    for step, want in refs.items():
        got = _rows(frame, step)
        for key, v in want.items():
            assert got[key] == pytest.approx(v, rel=1e-5, abs=1e-12), (step, key)


# ---------------------------------------------------------------------------------------------
# update_ratio pooled over a module's weights (LSTM layers, attention's in_proj)


class _RecurrentAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.r = nn.LSTM(6, 8, num_layers=2, batch_first=True)
        self.att = nn.MultiheadAttention(8, 2, batch_first=True)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o, _ = self.r(x)
        o, _ = self.att(o, o, o)
        return self.fc(o.mean(1))


def _weights(model: _RecurrentAttention) -> dict[str, list[torch.Tensor]]:
    def own(mod: nn.Module) -> list[torch.Tensor]:
        return [p.detach().to(D).clone() for n, p in mod.named_parameters()
                if p.ndim >= 2 and not n.startswith("out_proj")]

    return {"r": own(model.r), "att": own(model.att),
            "att.out_proj": [model.att.out_proj.weight.detach().to(D).clone()],
            "fc": own(model.fc)}


def test_update_ratio_pools_a_modules_weights_every_5() -> None:
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(4, 5, 6, generator=g), torch.randint(0, 3, (4,), generator=g)
    model = _RecurrentAttention()
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    seen = {}
    with dlt.Watch(model, every=5, out=None, theory=False) as watch:
        for step in range(11):
            opt.zero_grad()
            loss = CE(model(x), y)
            loss.backward()
            seen[step] = _weights(model)
            watch.step(loss)
            opt.step()
    frame = watch.frame()
    ratio = frame[frame.quantity == "update_ratio"]
    assert sorted(set(ratio.step)) == [5, 10]
    assert len(seen[0]["r"]) == 4 and len(seen[0]["att"]) == 1  # 2 layers x (ih, hh); in_proj
    for step in (5, 10):
        for name in ("r", "att", "att.out_proj", "fc"):
            now, before = seen[step][name], seen[step - 1][name]
            num = torch.sqrt(sum(((a - b) ** 2).sum() for a, b in zip(now, before)))
            den = torch.sqrt(sum((b ** 2).sum() for b in before))
            got = ratio[(ratio.step == step) & (ratio.module == name)].value
            assert len(got) == 1, (step, name)
            assert float(got.iloc[0]) == pytest.approx(float(num / den), rel=1e-9), (step, name)


# ---------------------------------------------------------------------------------------------
# a layer frozen under torch.no_grad() for two steps, then trained


def test_layer_frozen_then_unfrozen_in_a_watch() -> None:
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(32, 10, generator=g), torch.randint(0, 3, (32,), generator=g)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 16), nn.Tanh(), nn.Linear(16, 16), nn.ReLU(),
                          nn.Linear(16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    refs, first = {}, {}
    with dlt.Watch(model, every=1, out=None, theory=False) as watch:
        for step in range(4):
            model[0].requires_grad_(step >= 2)
            opt.zero_grad()
            if step < 2:
                with torch.no_grad():
                    h = model[0](x)
                out = model[1:](h)
            else:
                out = model(x)
            loss = CE(out, y)
            loss.backward()
            first[step] = model[0].weight.detach().to(D).clone()
            m = copy.deepcopy(model).to(D)
            s = m[0](x.to(D))
            if step >= 2:
                s.retain_grad()
            CE(m[1:](s), y).backward()
            refs[step] = {"pre_std": _std(s.detach()), "act_std": _std(torch.tanh(s.detach()))}
            if step >= 2:
                refs[step].update(grad_pre_std=_std(s.grad),
                                  weight_grad_std=_std(m[0].weight.grad))
            watch.step(loss)
            opt.step()
    frame = watch.frame()
    for step in range(4):
        got = {q: float(v) for q, v in zip(frame[(frame.step == step) & (frame.module == "0")]
                                           .quantity, frame[(frame.step == step)
                                                            & (frame.module == "0")].value)}
        assert got["pre_std"] == pytest.approx(refs[step]["pre_std"], rel=1e-5)
        assert got["act_std"] == pytest.approx(refs[step]["act_std"], rel=1e-5)
        if step < 2:
            assert "grad_pre_std" not in got and "weight_grad_std" not in got, (step, got)
        else:
            assert got["grad_pre_std"] == pytest.approx(refs[step]["grad_pre_std"], rel=1e-5)
            assert got["weight_grad_std"] == pytest.approx(refs[step]["weight_grad_std"],
                                                           rel=1e-5)
        if step >= 1:
            want = float((first[step] - first[step - 1]).norm() / first[step - 1].norm())
            assert got["update_ratio"] == pytest.approx(want, rel=1e-9, abs=0.0), step
    assert got["update_ratio"] > 0  # trained again at step 2, read at step 3


# ---------------------------------------------------------------------------------------------
# a Watch leaves training and every random stream as without it


def _train(watch: bool) -> tuple[list, list[torch.Tensor]]:
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    model = nn.Sequential(nn.Linear(10, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Dropout(0.3),
                          nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 3))
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    x, y = torch.randn(64, 10), torch.randint(0, 3, (64,))
    w = dlt.Watch(model, every=2, out=None, percentiles=(5, 50, 95)) if watch else None
    seq = []
    for _ in range(5):
        opt.zero_grad()
        loss = CE(model(x + 0.1 * torch.randn(64, 10)), y)
        loss.backward()
        if w is not None:
            w.step(loss)
        opt.step()
        seq.append((loss.item(), np.random.rand(), random.random(), torch.rand(1).item()))
    if w is not None:
        w.close()
        assert sorted(set(w.frame().step)) == [0, 2, 4]
    return seq, [t.detach().clone() for t in model.state_dict().values()]


def test_watch_leaves_losses_parameters_and_random_streams_as_found() -> None:
    plain, p_plain = _train(False)
    watched, p_watched = _train(True)
    assert watched == plain
    assert all(torch.equal(a, b) for a, b in zip(p_plain, p_watched))


# ---------------------------------------------------------------------------------------------
# a Watch names a layer the forward bypasses (self.b.forward(x), F.linear(h, self.c.weight)):
# dlt.probe warned, the Watch dropped its rows without a word


class _Bypassed(nn.Module):
    def __init__(self, how: str) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.how = how
        self.a, self.b, self.c = nn.Linear(10, 16), nn.Linear(16, 16), nn.Linear(16, 3)
        self.e = nn.Embedding(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.a(x))
        if self.how == "forward":
            h = self.b.forward(h)
        elif self.how == "functional":
            h = torch.nn.functional.linear(h, self.b.weight, self.b.bias)
        elif self.how == "table":  # an embedding table looked up without its module
            ids = torch.arange(16).expand(len(h), 16) % 4
            h = self.b(h) + torch.nn.functional.embedding(ids, self.e.weight).sum(-1)
        else:
            h = self.b(h)
        return self.c(torch.relu(h))


def _watched(model: nn.Module, steps: int = 2):
    g = torch.Generator().manual_seed(4)
    x, y = torch.randn(32, 10, generator=g), torch.randint(0, 3, (32,), generator=g)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    refs = {}
    with dlt.Watch(model, every=1, out=None, theory=False) as watch:
        for step in range(steps):
            m = copy.deepcopy(model).to(D)
            s = m.a(x.to(D))
            s.retain_grad()
            CE(m.c(torch.relu(m.b(torch.relu(s)))), y).backward()
            refs[step] = {"pre_std": _std(s.detach()), "grad_pre_std": _std(s.grad)}
            opt.zero_grad()
            loss = CE(model(x), y)
            loss.backward()
            watch.step(loss)
            opt.step()
    return watch.frame(), refs


@pytest.mark.parametrize("how", ["forward", "functional"])
def test_watch_names_a_layer_the_forward_bypasses(how: str) -> None:
    with pytest.warns(RuntimeWarning, match=r"Watch: the forward used the weights of 'b' "
                                            r"\(Linear\) without calling the module.*"
                                            r"self\.b\(x\)") as caught:
        frame, refs = _watched(_Bypassed(how))
    assert sum("without calling" in str(w.message) for w in caught) == 1  # said once
    assert set(frame.module) == {"", "a", "c"}
    for step, want in refs.items():
        got = _rows(frame, step)
        for q, v in want.items():
            assert got[("a", q)] == pytest.approx(v, rel=1e-5), (step, q)


def test_watch_names_a_table_looked_up_without_its_module_as_probe_does() -> None:
    """F.embedding(ids, self.e.weight): an embedding table is a candidate map (a tied output
    projection), so the first version of the check took every candidate as measured and said
    nothing, while dlt.probe named 'e'."""
    import warnings

    g = torch.Generator().manual_seed(6)
    x, y = torch.randn(32, 10, generator=g), torch.randint(0, 3, (32,), generator=g)
    model = _Bypassed("table")
    with pytest.warns(RuntimeWarning, match=r"weights of 'e' \(Embedding\) without calling"):
        probed = dlt.probe(model, x, y, CE)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with dlt.Watch(model, every=1, out=None, theory=False) as watch:
            for _ in range(2):
                opt.zero_grad()
                loss = CE(model(x), y)
                loss.backward()
                watch.step(loss)
                opt.step()
    said = [str(w.message) for w in caught if "without calling" in str(w.message)]
    assert len(said) == 1 and "weights of 'e' (Embedding)" in said[0], said
    assert set(watch.frame().module) == set(probed.module) == {"", "a", "b", "c"}


def test_watch_does_not_name_layers_that_ran_or_got_no_gradient() -> None:
    import warnings

    class EarlyExit(nn.Module):  # 'd' runs from step 1 on; its .grad is None at step 0
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.a, self.c, self.d = nn.Linear(10, 16), nn.Linear(16, 3), nn.Linear(16, 3)
            self.calls = 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            h = torch.tanh(self.a(x))
            return self.d(h) if self.calls % 2 == 0 else self.c(h)

    class OwnMap(nn.Module):  # its own weight as a map beside a child layer: measured
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.a = nn.Linear(10, 16)
            self.weight = nn.Parameter(torch.randn(3, 16) / 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.linear(torch.tanh(self.a(x)), self.weight)

    g = torch.Generator().manual_seed(5)
    x, y = torch.randn(32, 10, generator=g), torch.randint(0, 3, (32,), generator=g)
    for model in (EarlyExit(), OwnMap(), _Bypassed("call")):
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with dlt.Watch(model, every=1, out=None, theory=False) as watch:
                for _ in range(3):
                    opt.zero_grad()
                    loss = CE(model(x), y)
                    loss.backward()
                    watch.step(loss)
                    opt.step()
        assert len(watch.frame()) > 0
