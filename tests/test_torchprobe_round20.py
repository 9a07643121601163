"""Round 20 (torchprobe20): depthlab.torch's measuring side on usages not tried before, each
checked against a direct autograd computation in float64."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import depthlab.torch as dlt
from depthlab.probes import PERCENTILES


def _pstd(tensors) -> float:
    return torch.cat([t.detach().flatten() for t in tensors]).double().std(unbiased=False).item()


def _encoder():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 4)).double()


def _direct(model, loss_of):
    """Each Linear's outputs (every call through which the loss's gradient flows) and their
    gradients, by autograd on a copy."""
    ref = copy.deepcopy(model)
    calls: dict[str, list] = {}
    hooks = []
    for name, m in ref.named_modules():
        if isinstance(m, nn.Linear):
            def hook(mod, args, out, name=name):
                rec = {"s": out.detach().clone()}
                calls.setdefault(name, []).append(rec)
                out.register_hook(lambda g, rec=rec: rec.__setitem__("g", g.detach().clone()))
            hooks.append(m.register_forward_hook(hook))
    loss_of(ref).backward()
    for h in hooks:
        h.remove()
    return {name: ([r["s"] for r in recs if "g" in r], [r["g"] for r in recs if "g" in r])
            for name, recs in calls.items()}


def _watched_step(model, watched, loss_of, **kw):
    watch = dlt.Watch(watched, every=1, theory=False, **kw)
    loss = loss_of(model)
    loss.backward()
    watch.step(loss)
    watch.close()
    frame = watch.frame()
    return frame[frame.step == 0].set_index(["module", "quantity"]).value


_g = torch.Generator().manual_seed(5)
_A, _B, _C = torch.randn(3, 32, 6, generator=_g, dtype=torch.float64)
_Y = torch.rand(32, generator=_g, dtype=torch.float64)

_PAIRS = {
    # one loss over two forwards of the model (SimCLR/siamese pair): both graded by one backward
    "pair": lambda m: F.mse_loss((m(_A) - m(_B)).pow(2).sum(1), _Y),
    "triplet": lambda m: F.relu((m(_A) - m(_B)).pow(2).sum(1) - (m(_A) - m(_C)).pow(2).sum(1)
                                + 1).mean(),
    # a forward the loss reads detached (a target): not graded, not measured
    "detached_second": lambda m: F.mse_loss((m(_A) - m(_B).detach()).pow(2).sum(1), _Y),
    "detached_first": lambda m: F.mse_loss((m(_A).detach() - m(_B)).pow(2).sum(1), _Y),
}


@pytest.mark.parametrize("case", list(_PAIRS))
def test_watch_pools_the_forwards_that_one_backward_runs_through(case):
    """A step whose loss reads several forwards of the model (a siamese pair, a triplet) had the
    rows of the last forward only (pair: pre_std 0.2554 where both forwards' is 0.2684): they
    now pool every forward the backward ran through, as dlt.probe pools a module's calls; a
    forward read detached gets no rows, as before."""
    loss_of = _PAIRS[case]
    direct = _direct(_encoder(), loss_of)
    for pct in ((), PERCENTILES):
        model = _encoder()
        table = _watched_step(model, model, loss_of, percentiles=pct)
        for name, (outs, grads) in direct.items():
            assert table[(name, "pre_std")] == pytest.approx(_pstd(outs), rel=1e-10)
            assert table[(name, "grad_pre_std")] == pytest.approx(_pstd(grads), rel=1e-10)
            if pct:
                values = torch.cat([o.flatten() for o in outs]).numpy()
                assert table[(name, "pre_p50")] == pytest.approx(np.percentile(values, 50),
                                                                 rel=1e-10)


def test_watch_keeps_gradient_accumulation_to_the_last_micro_batch():
    """A backward per micro-batch (gradient accumulation): the layer rows stay the last
    micro-batch's (documented), not pooled with the earlier ones."""
    model = _encoder()
    watch = dlt.Watch(model, every=1, theory=False)
    F.mse_loss(model(_A).pow(2).sum(1), _Y).backward()
    loss = F.mse_loss(model(_B).pow(2).sum(1), _Y)
    loss.backward()
    watch.step(loss)
    watch.close()
    table = watch.frame().set_index(["module", "quantity"]).value
    direct = _direct(_encoder(), lambda m: F.mse_loss(m(_B).pow(2).sum(1), _Y))
    for name, (outs, grads) in direct.items():
        assert table[(name, "pre_std")] == pytest.approx(_pstd(outs), rel=1e-10)
        assert table[(name, "grad_pre_std")] == pytest.approx(_pstd(grads), rel=1e-10)


class _Cell(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(6 + 8, 8)
        self.out = nn.Linear(8, 8)

    def forward(self, x, h):
        return torch.tanh(self.out(torch.tanh(self.inp(torch.cat([x, h], 1)))))


class _Unrolled(nn.Module):
    def __init__(self):
        super().__init__()
        self.cell = _Cell()
        self.head = nn.Linear(8, 1)

    def forward(self, xs):
        h = xs.new_zeros(xs.shape[0], 8)
        for t in range(xs.shape[1]):
            h = self.cell(xs[:, t], h)
        return self.head(h).squeeze(1)


def test_watch_on_a_submodule_called_in_a_loop_pools_every_call():
    """``Watch(model.cell)`` where the model calls the cell 12 times per forward: each call is a
    forward of the watched module, and only the last was recorded (pre_std of the last time
    step); now every call the backward reached is pooled: the rows equal dlt.probe's of the
    whole model (which pools the calls) and the direct computation."""
    torch.manual_seed(1)
    net = _Unrolled().double()
    g = torch.Generator().manual_seed(2)
    xs = torch.randn(16, 12, 6, generator=g, dtype=torch.float64)
    ys = torch.randn(16, generator=g, dtype=torch.float64)
    probed = dlt.probe(copy.deepcopy(net), xs, ys, F.mse_loss).set_index(
        ["module", "quantity"]).value
    direct = _direct(net, lambda m: F.mse_loss(m(xs), ys))
    table = _watched_step(net, net.cell, lambda m: F.mse_loss(m(xs), ys))
    for name in ("inp", "out"):
        outs, grads = direct[f"cell.{name}"]
        assert len(outs) == 12
        for q, want in (("pre_std", _pstd(outs)), ("grad_pre_std", _pstd(grads))):
            assert table[(name, q)] == pytest.approx(want, rel=1e-10)
            assert probed[(f"cell.{name}", q)] == pytest.approx(want, rel=1e-10)


class _Recursive(nn.Module):
    """A forward that calls the model itself (depth 3), then the layer once more."""

    def __init__(self):
        super().__init__()
        self.l = nn.Linear(8, 8)
        self.o = nn.Linear(8, 2)

    def forward(self, x, depth=3):
        h = torch.tanh(self.l(x))
        h = self(h, depth - 1) if depth > 0 else h
        return self.o(torch.tanh(self.l(h))) if depth == 3 else h


def test_a_model_whose_forward_calls_itself_is_measured_over_every_call():
    """Each nested call of the model began a new pass: dlt.probe measured the calls after the
    innermost one only ('l' pre_std 0.196 where its 5 calls' is 0.361), and once those were
    pooled the percentiles still missed the calls before the innermost one's end (p15 -0.155
    where all calls' is -0.216): both now over every call, in dlt.probe and in a Watch."""
    torch.manual_seed(0)
    model = _Recursive().double()
    g = torch.Generator().manual_seed(3)
    x = torch.randn(16, 8, generator=g, dtype=torch.float64)
    y = torch.randn(16, 2, generator=g, dtype=torch.float64)
    direct = _direct(model, lambda m: F.mse_loss(m(x), y))
    assert len(direct["l"][0]) == 5
    probed = dlt.probe(model, x, y, F.mse_loss, percentiles=(15, 50)).set_index(
        ["module", "quantity"]).value
    table = _watched_step(model, model, lambda m: F.mse_loss(m(x), y), percentiles=(15, 50))
    for rows in (probed, table):
        for name, (outs, grads) in direct.items():
            values = torch.cat([o.flatten() for o in outs]).numpy()
            assert rows[(name, "pre_std")] == pytest.approx(_pstd(outs), rel=1e-10)
            assert rows[(name, "grad_pre_std")] == pytest.approx(_pstd(grads), rel=1e-10)
            assert rows[(name, "pre_p15")] == pytest.approx(np.percentile(values, 15), rel=1e-10)


def test_probe_holds_no_percentile_copies_through_its_backward(monkeypatch):
    """The pooling of forwards (19263a1) keeps each pass's percentile values until the record;
    dlt.probe's single forward has nothing to pool with, so its copies (the size of every layer
    output) are dropped before the backward, as before that change; a recursive model keeps
    them (its nested calls are pooled)."""
    from depthlab.torch import hooks

    held = []
    collect = hooks.Recording.collect

    def spy(self, *args, **kwargs):
        held.append(sum(acc.kept is not None for acc in self.p.pre.values()))
        return collect(self, *args, **kwargs)
    monkeypatch.setattr(hooks.Recording, "collect", spy)
    model = _encoder()
    dlt.probe(model, _A, _Y[:, None].expand(32, 4), F.mse_loss)
    torch.manual_seed(0)
    dlt.probe(_Recursive().double(), _A[:, :8].repeat(1, 2)[:, :8], _Y[:, None].expand(32, 2),
              F.mse_loss)
    assert held[0] == 0 and held[1] > 0
