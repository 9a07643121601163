"""Round 26 (watchfast26): three shortcuts of a recorded forward must leave every recorded
number as it was, to the bit.

* ``Recording._last`` (the pre-hook's "move my hooks behind everyone else's") does nothing while
  no hook was added anywhere since the recording's own were last put at the end
  (``hooks._hook_stamp``: ``RemovableHandle.next_id`` and the recordings' own re-insertions).
  Compared with the same loop forced to move them at every forward, on models with user hooks
  that change what a module hands on, added at every point of the loop.
* ``functional_acts._candidates`` (the layer outputs a functional activation may follow) reads no
  ``grad_fn`` for an output the model returns as it is. Compared with the selection it replaced
  (kept below as ``_candidates_before``) on every recorded pass of models with functional,
  in-place and returned activations.
* ``ActAcc.follower`` takes any ``nn.ReLU``'s kind without its ``extra_repr``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from helpers.torchref import FunctionalReluNet, ResidualReluNet
from torch import nn

from depthlab.torch import Watch, functional_acts, hooks
from depthlab.torch.accumulators import _RELU_KIND, Acc, ActAcc


def _frame_bits(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    out["value"] = frame["value"].to_numpy(np.float64).view(np.int64)
    return out


def _assert_same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert len(a) == len(b) > 0
    pd.testing.assert_frame_equal(_frame_bits(a), _frame_bits(b), check_exact=True)


def _doubling(module, args, output):
    return output * 2.0


def _shift(module, args):
    return (args[0] + 0.5,)


def _train(make, hook_plan, every, steps=7, seed=0):
    """Train ``make()`` under a Watch for ``steps`` steps; ``hook_plan(model, step, where)`` may
    add hooks at 'start' (before the forward) and 'after' (after watch.step)."""
    torch.manual_seed(seed)
    model = make()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    g = torch.Generator().manual_seed(seed + 1)
    watch = Watch(model, every=every, theory=False)
    losses = []
    for step in range(steps):
        x = torch.randn(16, 6, generator=g)
        y = torch.randint(0, 3, (16,), generator=g)
        hook_plan(model, step, "start")
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        watch.step(loss)
        hook_plan(model, step, "after")
        opt.step()
        losses.append(loss.item())
    watch.close()
    return watch.frame(), losses


def _mlp(inplace: bool = False) -> nn.Module:
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(inplace=inplace), nn.Linear(16, 16),
                         nn.ReLU(inplace=inplace), nn.Linear(16, 3))


def _plan_none(model, step, where):
    pass


def _plan_after_arming(model, step, where):
    # between the arming call and the recorded forward (every 2: calls 1, 3, 5 arm)
    if where == "after" and step == 1:
        model[0].register_forward_hook(_doubling)
    if where == "after" and step == 3:
        model[2].register_forward_pre_hook(_shift)
    if where == "after" and step == 5:
        model[3].register_forward_hook(_doubling, prepend=True)


def _plan_every_point(model, step, where):
    if where == "start" and step == 0:
        model[0].register_forward_hook(_doubling)  # after Watch() armed step 0
    if where == "start" and step == 2:
        model[1].register_forward_hook(_doubling)  # a ReLU's output changed
    if where == "after" and step == 2:
        model[4].register_forward_hook(_doubling)
    if where == "start" and step == 4:
        torch.nn.modules.module.register_module_forward_hook(lambda m, a, o: None).remove()


class _Returned(nn.Module):
    """A layer output returned as it is and also read by a functional ReLU; another changed in
    place by the ReLU and returned too; the loss reads the first."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Linear(6, 16), nn.Linear(16, 16), nn.Linear(16, 3)

    def forward(self, x):
        h = self.a(x)
        z = self.b(F.relu(h))
        F.relu(z, inplace=True)
        return self.c(z), h, z


class _ReturnedLoss(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = _Returned()

    def forward(self, x):
        return self.net(x)[0]


class _DictOut(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(6, 16), nn.Linear(16, 3)

    def forward(self, x):
        h = self.a(x)
        return {"logits": self.b(torch.tanh(h)), "hidden": h}


class _InPlaceOther(nn.Module):
    """A layer output changed in place by something that is not an activation (``h += 1``)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(6, 16), nn.Linear(16, 3)

    def forward(self, x):
        h = self.a(x)
        h += 1.0
        return self.b(F.gelu(h))


def _first(model_out):
    return model_out[0] if isinstance(model_out, tuple) else (
        model_out["logits"] if isinstance(model_out, dict) else model_out)


class _Head(nn.Module):
    """A model whose forward returns a tuple/dict, trained on its first output."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return _first(self.inner(x))


MODELS = {
    "mlp": lambda: _mlp(),
    "mlp-inplace": lambda: _mlp(inplace=True),
    "functional": FunctionalReluNet,
    "returned": _ReturnedLoss,
    "dict": lambda: _Head(_DictOut()),
    "inplace-other": _InPlaceOther,
    "residual": ResidualReluNet,
    "bn-tanh": lambda: nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.Tanh(),
                                     nn.Linear(16, 3)),
}


def _always_move(monkeypatch) -> None:
    """The behaviour before the shortcut: ``_last`` moves the hooks at every forward."""
    monkeypatch.setattr(hooks, "_hook_stamp", lambda: object())


@pytest.mark.parametrize("plan", [_plan_none, _plan_after_arming, _plan_every_point],
                         ids=["no-user-hooks", "after-arming", "every-point"])
@pytest.mark.parametrize("every", [1, 2, 3])
@pytest.mark.parametrize("inplace", [False, True])
def test_frames_with_the_hook_order_shortcut_equal_those_moving_the_hooks_every_forward(
        monkeypatch, plan, every, inplace):
    fast, fast_losses = _train(lambda: _mlp(inplace), plan, every)
    with monkeypatch.context() as m:
        _always_move(m)
        slow, slow_losses = _train(lambda: _mlp(inplace), plan, every)
    assert fast_losses == slow_losses
    _assert_same(fast, slow)


def test_a_hook_added_between_the_arming_call_and_the_forward_runs_before_the_watchs():
    """The recorded layer output is what the module hands on: the user's doubled one."""
    torch.manual_seed(0)
    model = _mlp()
    seen = []
    watch = Watch(model, every=2, theory=False)
    g = torch.Generator().manual_seed(1)
    for step in range(3):
        x = torch.randn(16, 6, generator=g)
        y = torch.randint(0, 3, (16,), generator=g)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        watch.step(loss)
        if step == 1:  # the arming call of step 2 has run: a hook now goes behind the Watch's
            model[0].register_forward_hook(_doubling)
            model[0].register_forward_hook(lambda m, a, o: seen.append(o.detach().clone()))
        model.zero_grad()
    watch.close()
    frame = watch.frame()
    got = frame[(frame.step == 2) & (frame.layer == 1) & (frame.quantity == "pre_std")]
    want = seen[-1].double().std(unbiased=False).item()
    assert got.value.item() == pytest.approx(want, rel=1e-6)
    halved = (seen[-1] / 2).double().std(unbiased=False).item()
    assert got.value.item() != pytest.approx(halved, rel=1e-3)


def test_a_second_watch_on_the_same_model_records_as_it_did(monkeypatch):
    def run():
        torch.manual_seed(0)
        model = _mlp()
        model[0].register_forward_hook(_doubling)
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        a, b = Watch(model, every=1, theory=False), Watch(model, every=2, theory=False)
        g = torch.Generator().manual_seed(2)
        for step in range(5):
            x = torch.randn(8, 6, generator=g)
            y = torch.randint(0, 3, (8,), generator=g)
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            a.step(loss)
            b.step(loss)
            if step == 2:
                model[2].register_forward_hook(_doubling)
            opt.step()
        a.close()
        b.close()
        return a.frame(), b.frame()

    fast = run()
    with monkeypatch.context() as m:
        _always_move(m)
        slow = run()
    for x, y in zip(fast, slow):
        _assert_same(x, y)


def _candidates_before(p, output):
    """The selection ``record_functional`` made before round 26 (kept as the reference)."""
    from depthlab.torch.hooks import _ver

    cands = []
    for t, v, info, kind in p.links.values():
        if kind != "layer" and kind != "norm":
            continue
        fn = t.grad_fn
        if fn is None or v == -1:
            continue
        now = _ver(t)
        if now == v:
            cands.append((t, v, info, None))
        elif now == v + 1 and fn.name() in functional_acts.ACT_NODES:
            cands.append((t, v, info, fn))
    if not cands:
        return [], []
    outs: list = []
    functional_acts._tensors(output, outs)
    returned = {id(o) for o in outs}
    return [c for c in cands if c[3] is not None or id(c[0]) not in returned], outs


@pytest.mark.parametrize("name", sorted(MODELS) + ["returned-tuple", "transformer"])
def test_functional_candidates_are_the_selection_they_replaced(monkeypatch, name):
    checked = []
    real = functional_acts.record_functional

    def spy(rec, output):
        old_todo, old_outs = _candidates_before(rec.p, output)
        new_todo, new_outs = functional_acts._candidates(rec.p, output)
        assert len(new_todo) == len(old_todo)
        for a, b in zip(new_todo, old_todo):
            assert a[0] is b[0] and a[1] == b[1] and a[2] is b[2] and a[3] is b[3]
        if old_todo:
            assert [id(t) for t in new_outs] == [id(t) for t in old_outs]
        checked.append(len(old_todo))
        return real(rec, output)

    monkeypatch.setattr(hooks, "record_functional", spy)
    torch.manual_seed(0)
    if name == "returned-tuple":
        model = _Returned()
    elif name == "transformer":
        model = nn.TransformerEncoderLayer(6, 2, dim_feedforward=16, dropout=0.0,
                                           batch_first=True)
    else:
        model = MODELS[name]()
    watch = Watch(model, every=1, theory=False)
    g = torch.Generator().manual_seed(3)
    for _ in range(3):
        x = torch.randn(4, 5, 6, generator=g) if name == "transformer" else \
            torch.randn(8, 6, generator=g)
        out = model(x)
        _first(out).square().mean().backward()
        with torch.inference_mode():  # a validation forward while armed: ignored
            model(x)
        watch.step(_first(out).square().mean())
        model.zero_grad()
    watch.close()
    assert checked
    if name in ("functional", "returned", "returned-tuple", "residual",
                "transformer"):
        assert any(checked)  # the comparison covered some candidates


@pytest.mark.parametrize("inplace", [False, True])
def test_a_relus_kind_is_what_its_repr_gives(inplace):
    m = nn.ReLU(inplace=inplace)
    assert _RELU_KIND == (type(m), m.extra_repr().replace("inplace=True", "").strip(", "))
    acc = ActAcc(Acc())
    acc.follower(m)
    acc.follower(nn.ReLU(inplace=not inplace))  # in place or not: one kind
    assert acc.kind == _RELU_KIND and not acc.mixed
    acc.follower(nn.LeakyReLU(0.2))
    assert acc.mixed


def test_a_relu_subclass_or_patched_repr_keeps_its_own_kind():
    class MyReLU(nn.ReLU):
        def extra_repr(self) -> str:
            return "clipped"

    acc = ActAcc(Acc())
    acc.follower(nn.ReLU())
    acc.follower(MyReLU())
    assert acc.mixed
    odd = nn.ReLU()
    odd.extra_repr = lambda: "other"
    acc = ActAcc(Acc())
    acc.follower(odd)
    assert acc.kind == (nn.ReLU, "other")
