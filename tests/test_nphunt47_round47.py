"""Round 47 (nphunt47): regressions found hunting the NumPy engine against torch."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from depthlab.optimizers import get_optimizer
from depthlab.parameter import Parameter

torch = pytest.importorskip("torch")


def _fill_grads(params, tensors, rng):
    for p, t in zip(params, tensors):
        g = rng.normal(size=p.value.shape) + 0.1 * p.value
        p.grad = g.copy()
        t.grad = torch.tensor(g.copy())


@pytest.mark.parametrize("groups", [False, True])
def test_adagrad_state_dict_before_the_first_step_carries_the_starting_sums(groups):
    """torch's Adagrad creates its sums (``initial_accumulator_value``) in its constructor, so a
    ``state_dict()`` taken before the first step holds them, and an Adagrad built with other
    settings that loads it goes on from them. depthlab's sums were created at the first step
    from the loading optimizer's own settings: 20 steps ended 5e-3 away from torch's."""
    rng = np.random.default_rng(0)
    values = [rng.normal(size=s) for s in ((3, 2), (2,))]
    ps = [Parameter(f"p{i}", v.copy()) for i, v in enumerate(values)]
    ts = [torch.tensor(v.copy(), requires_grad=True) for v in values]
    kw = {"lr": 0.01, "lr_decay": 0.1, "initial_accumulator_value": 0.2}
    if groups:
        saver = get_optimizer("adagrad", [{"params": ps[:1]},
                                          {"params": ps[1:], "lr": 0.05}], **kw)
        tsaver = torch.optim.Adagrad([{"params": ts[:1]}, {"params": ts[1:], "lr": 0.05}],
                                     **kw)
        opt = get_optimizer("adagrad", [{"params": ps[:1]}, {"params": ps[1:]}], lr=0.5)
        topt = torch.optim.Adagrad([{"params": ts[:1]}, {"params": ts[1:]}], lr=0.5)
    else:
        saver = get_optimizer("adagrad", ps, **kw)
        tsaver = torch.optim.Adagrad(ts, **kw)
        opt = get_optimizer("adagrad", ps, lr=0.5)
        topt = torch.optim.Adagrad(ts, lr=0.5)
    opt.load_state_dict(pickle.loads(pickle.dumps(saver.state_dict())))
    # torch's state_dict shares the saver's tensors with the loader: copy them first
    tsd = tsaver.state_dict()
    tsd["state"] = {k: {n: v.clone() for n, v in s.items()} for k, s in tsd["state"].items()}
    topt.load_state_dict(tsd)
    grads = np.random.default_rng(1)
    for _ in range(20):
        _fill_grads(ps, ts, grads)
        opt.step()
        topt.step()
    for p, t in zip(ps, ts):
        np.testing.assert_allclose(p.value, t.detach().numpy(), rtol=1e-13, atol=1e-15)


def test_adagrad_state_dict_before_the_first_step_resumes_bit_for_bit():
    """The same without torch: saver and loader take identical steps from there on."""
    rng = np.random.default_rng(0)
    values = [rng.normal(size=s) for s in ((3, 2), (2,))]
    a = [Parameter(f"p{i}", v.copy()) for i, v in enumerate(values)]
    b = [Parameter(f"p{i}", v.copy()) for i, v in enumerate(values)]
    saver = get_optimizer("adagrad", a, lr=0.01, initial_accumulator_value=0.3)
    loader = get_optimizer("adagrad", b, lr=0.5)
    loader.load_state_dict(saver.state_dict())
    ga, gb = np.random.default_rng(1), np.random.default_rng(1)
    for _ in range(10):
        for p in a:
            p.grad = ga.normal(size=p.value.shape)
        for p in b:
            p.grad = gb.normal(size=p.value.shape)
        saver.step()
        loader.step()
    for p, q in zip(a, b):
        assert np.array_equal(p.value, q.value)
