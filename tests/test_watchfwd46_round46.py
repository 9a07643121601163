"""Round 46 (watchfwd46): the recorded step's ``layer -> nn.ReLU(inplace=True)`` fast path
(:mod:`depthlab.torch.fastpath`, ``Recording._chain_post``).

Every test trains the same model twice, with the fast path and with it turned off (the plan
built without chains: the general hooks ``_layer_post``/``_fuse``/``_relu_post``), and
compares the Watch's frames bit for bit (NaN = NaN), the losses and the parameters. Others
check that the fast path really takes the ReLU's work (its hook not called, not in its dict
during the forward) and that every trap puts the ReLU's hook back before the ReLU runs.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from torch import nn

import depthlab.torch as dlt
from depthlab.torch import hooks as H
from depthlab.torch.accumulators import watch_kernels
from depthlab.torch.fastpath import chains, reads_values

needs_kernels = pytest.mark.skipif(watch_kernels() is None,
                                   reason="the CPU kernels (depthlab[fast], Numba) are off")


def _mlp(inplace: bool = True, shared: bool = False) -> nn.Sequential:
    torch.manual_seed(0)
    if shared:
        act = nn.ReLU(inplace=inplace)
        return nn.Sequential(nn.Linear(12, 16), act, nn.Linear(16, 16), act, nn.Linear(16, 4))
    return nn.Sequential(nn.Linear(12, 16), nn.ReLU(inplace=inplace), nn.Linear(16, 16),
                         nn.ReLU(inplace=inplace), nn.Linear(16, 4))


def _same(a, b) -> None:
    assert a.shape == b.shape
    for c in ("step", "layer", "module", "quantity"):
        assert (a[c].values == b[c].values).all(), c
    va, vb = a["value"].to_numpy(), b["value"].to_numpy()
    same = (va.view(np.int64) == vb.view(np.int64)) | (np.isnan(va) & np.isnan(vb))
    assert same.all(), a[~same].to_string()


def _train(make, monkeypatch, fast: bool, every: int = 1, steps: int = 5, between=None,
           x=None):
    """Frames, losses and parameters of ``steps`` SGD steps under a Watch; ``between(m, i)``
    runs before step ``i``'s forward."""
    with monkeypatch.context() as mp:
        if not fast:
            mp.setattr(H, "chains", lambda model, owners: {})
        m = make()
        g = torch.Generator().manual_seed(1)
        x = torch.randn(32, 12, generator=g) if x is None else x
        y = torch.randint(0, 4, (x.shape[0],), generator=g)
        opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
        w = dlt.Watch(m, every=every, percentiles=())
        losses = []
        for i in range(steps):
            if between is not None:
                between(m, i)
            opt.zero_grad()
            loss = nn.functional.cross_entropy(m(x + 0.01 * i), y)
            loss.backward()
            w.step(loss)
            opt.step()
            losses.append(loss.item())
        frame = w.frame()
        w.close()
    return frame, losses, [p.detach().clone() for p in m.parameters()]


def _check_same(make, monkeypatch, **kw) -> None:
    fa, la, pa = _train(make, monkeypatch, True, **kw)
    fb, lb, pb = _train(make, monkeypatch, False, **kw)
    _same(fa, fb)
    assert la == lb
    assert all(torch.equal(a, b) for a, b in zip(pa, pb))


def _count_relu_posts(monkeypatch) -> list:
    calls = [0]
    orig = H.Recording._relu_post

    @functools.wraps(orig)
    def counted(self, *a):
        calls[0] += 1
        return orig(self, *a)

    monkeypatch.setattr(H.Recording, "_relu_post", counted)
    return calls


@needs_kernels
@pytest.mark.parametrize("every", [1, 3])
def test_frames_bit_identical_with_and_without_the_fast_path(monkeypatch, every):
    _check_same(_mlp, monkeypatch, every=every, steps=7)


@needs_kernels
def test_the_fast_path_books_the_relu_without_its_hook(monkeypatch):
    """After the pair was fused once, the ReLUs' hooks neither run nor sit in their dicts
    during the recorded forward; the rows are still there."""
    calls = _count_relu_posts(monkeypatch)
    m = _mlp()
    seen = []  # the first ReLU's forward hooks while the next layer starts
    m[2].register_forward_pre_hook(lambda mod, a: seen.append(len(m[1]._forward_hooks)))
    w = dlt.Watch(m, every=1, percentiles=())
    x, y = torch.randn(8, 12), torch.randint(0, 4, (8,))
    for _ in range(4):
        loss = nn.functional.cross_entropy(m(x), y)
        loss.backward()
        w.step(loss)
    before = calls[0]
    loss = nn.functional.cross_entropy(m(x), y)
    assert seen[-1] == 0  # parked during the forward
    assert len(m[1]._forward_hooks) == 1  # back after it
    loss.backward()
    w.step(loss)
    assert calls[0] == before  # no ReLU hook ran
    f = w.frame()
    last = f[f.step == f.step.max()]
    assert {"act_std", "dead_frac"} <= set(last.quantity)
    w.close()
    assert all(not c._forward_hooks for c in m)


@needs_kernels
def test_relu_hooks_are_back_outside_the_forward(monkeypatch):
    """A ReLU called on its own (a loop through the Sequential's children) while armed is
    measured by its own hook: parked only during the model's forward."""
    def between(m, i):
        if i == 3:
            with torch.no_grad():
                h = m[0](torch.randn(4, 12))
                m[1](h)

    _check_same(_mlp, monkeypatch, between=between)
    m = _mlp()
    rec = H.Recording(m, percentiles=())
    for _ in range(3):
        rec.new_pass()
        rec.arm()
        m(torch.randn(4, 12)).sum().backward()
        assert len(m[1]._forward_hooks) == 1 and len(m[3]._forward_hooks) == 1
        rec.disarm()


@needs_kernels
def test_shared_relu_instance(monkeypatch):
    """One ReLU instance after two layers: both pairs take the fast path, same frames."""
    calls = _count_relu_posts(monkeypatch)
    _check_same(functools.partial(_mlp, shared=True), monkeypatch, steps=6)
    assert calls[0] > 0  # (the first passes and the reference run)


@needs_kernels
def test_non_inplace_relu_keeps_the_general_path(monkeypatch):
    _check_same(functools.partial(_mlp, inplace=False), monkeypatch)


@needs_kernels
def test_inplace_switched_off_mid_run(monkeypatch):
    """``relu.inplace = False`` after the pair was fused: the layer's hook sees it and puts the
    ReLU's hook back before it runs (no act rows lost)."""
    def between(m, i):
        if i == 3:
            m[1].inplace = False

    _check_same(_mlp, monkeypatch, between=between, steps=6)
    f, _, _ = _train(_mlp, monkeypatch, True, between=between, steps=6)
    last = f[(f.step == f.step.max()) & (f.layer == 1)]
    assert "act_std" in set(last.quantity)


@needs_kernels
def test_user_hooks_added_mid_run(monkeypatch):
    """A forward hook of the user's on a ReLU (doubling its output), one on a layer (its
    output replaced), a global forward hook: each added after the pair was fused; same
    frames."""
    def on_relu(m, i):
        if i == 3:
            m[1].register_forward_hook(lambda mod, a, out: out * 2)

    def on_layer(m, i):
        if i == 3:
            m[2].register_forward_hook(lambda mod, a, out: out + 0.5)

    _check_same(_mlp, monkeypatch, between=on_relu, steps=6)
    _check_same(_mlp, monkeypatch, between=on_layer, steps=6)
    handles = []

    def global_hook(m, i):  # on for steps 3 and 4 of each run
        if i == 3:
            handles.append(nn.modules.module.register_module_forward_hook(
                lambda mod, a, out: None))
        elif i == 5:
            handles.pop().remove()

    try:
        _check_same(_mlp, monkeypatch, between=global_hook, steps=6)
    finally:
        for h in handles:
            h.remove()


@needs_kernels
def test_layer_called_outside_its_sequential(monkeypatch):
    """A layer of a chain also called by a custom forward (not by the Sequential's loop): that
    call takes the general path; same frames."""
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.body = nn.Sequential(nn.Linear(12, 12), nn.ReLU(inplace=True))
            self.head = nn.Linear(12, 4)

        def forward(self, x):
            h = self.body(x)
            h = self.body[0](h)  # the chain's layer again, followed by no ReLU
            return self.head(h)

    _check_same(Net, monkeypatch)


@needs_kernels
def test_nested_sequential_and_cancelling_relu_output(monkeypatch):
    """A Sequential inside a Sequential; a layer whose ReLU output cancels around its mean
    (a bias of 1e4: the act sums are taken again from the values, by the ReLU's hook)."""
    def make():
        torch.manual_seed(0)
        m = nn.Sequential(nn.Sequential(nn.Linear(12, 16), nn.ReLU(inplace=True)),
                          nn.Linear(16, 16), nn.ReLU(inplace=True), nn.Linear(16, 4))
        with torch.no_grad():
            m[1].bias.fill_(1e4)
        return m

    calls = _count_relu_posts(monkeypatch)
    _check_same(make, monkeypatch)
    assert calls[0] > 0


@needs_kernels
def test_forward_that_raises_leaves_the_hooks_in_place(monkeypatch):
    """A forward that raises after a parked ReLU: its hook is back (the model's always-call
    hook), so the ReLU is measured when called on its own."""
    m = _mlp()
    rec = H.Recording(m, percentiles=())
    for _ in range(3):
        rec.new_pass()
        rec.arm()
        m(torch.randn(4, 12)).sum().backward()
        rec.disarm()
    rec.new_pass()
    rec.arm()
    with pytest.raises(RuntimeError):
        m(torch.randn(4, 13))  # the first layer raises: wrong width
    assert len(m[1]._forward_hooks) == 1 and len(m[3]._forward_hooks) == 1
    rec.disarm()
    assert not m[1]._forward_hooks


def test_chains_found_only_where_the_relu_follows_a_layer_everywhere():
    """``chains``: a Linear followed by a ReLU in a plain Sequential; not a ReLU that another
    place of the model calls after something else, not a Sequential subclass."""
    class Seq(nn.Sequential):
        pass

    act = nn.ReLU(inplace=True)
    m = nn.Sequential(nn.Linear(3, 3), act, nn.Dropout(0.0), act, Seq(nn.Linear(3, 3),
                                                                      nn.ReLU()))
    rec = H.Recording(m, percentiles=())
    assert chains(m, rec._owners) == {}
    m2 = _mlp()
    rec2 = H.Recording(m2, percentiles=())
    found = chains(m2, rec2._owners)
    assert sorted(c.kl for c in found.values()) == ["0", "2"]


@pytest.mark.parametrize("n, s1, s2, reads", [
    (4, 2.0, 2.0, False),  # mean 0.5, var 0.25
    (4, 4e4, 4e8, True),  # mean 1e4, var 0: cancels
    (4, 0.0, 0.0, True),  # norm 0 below NORM_LOW: taken again
    (4, 1.0, float("nan"), True),
])
def test_reads_values(n, s1, s2, reads):
    assert reads_values(n, s1, s2) is reads
