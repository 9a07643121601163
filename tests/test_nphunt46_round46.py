"""nphunt46 (round 46): the NumPy engine against PyTorch (optimizers listed, ...)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import depthlab as dl
from depthlab.optimizers import OPTIMIZERS, get_optimizer
from depthlab.parameter import Parameter

# -- RAdam and Adamax: listed, and step for step torch.optim's -----------------------------

_RADAM_ADAMAX = [
    ("radam", "RAdam", [{}]),
    ("radam", "RAdam", [{"weight_decay": 0.1}]),
    ("radam", "RAdam", [{"weight_decay": 0.1, "decoupled_weight_decay": True,
                         "betas": (0.8, 0.99), "eps": 1e-6}]),
    ("radam", "RAdam", [{"weight_decay": 0.05},
                        {"decoupled_weight_decay": True, "weight_decay": 0.2, "lr": 0.05}]),
    ("radam", "RAdam", [{"maximize": True, "weight_decay": 0.1}]),
    ("adamax", "Adamax", [{}]),
    ("adamax", "Adamax", [{"weight_decay": 0.1, "betas": (0.5, 0.9), "eps": 1e-3}]),
    ("adamax", "Adamax", [{"weight_decay": 0.05}, {"lr": 0.05, "betas": (0.7, 0.95)}]),
    ("adamax", "Adamax", [{"maximize": True, "weight_decay": 0.1}]),
]


def test_radam_and_adamax_are_listed_with_the_other_optimizers():
    """RAdam and Adamax were found by name but left out of ``OPTIMIZERS`` (the names a
    config's error, ``init``'s starter config and the playground offer)."""
    assert OPTIMIZERS[:7] == ("sgd", "adagrad", "adadelta", "rmsprop", "adam", "adamw",
                              "nadam")
    assert {"radam", "adamax"} <= set(OPTIMIZERS) and len(OPTIMIZERS) == 9
    assert set(dl.OPTIMIZERS) == set(OPTIMIZERS)
    from depthlab.spec import all_optimizer_hyperparameters, optimizer_hyperparameters

    assert "decoupled_weight_decay" in optimizer_hyperparameters("radam")
    assert set(optimizer_hyperparameters("adamax")) == {
        "betas", "eps", "weight_decay", "maximize"}
    assert "decoupled_weight_decay" in all_optimizer_hyperparameters()


def test_a_config_naming_a_wrong_optimizer_lists_radam_and_adamax():
    from depthlab.spec import TrainSpec

    with pytest.raises(ValueError, match=r"accepted: .*nadam, radam, adamax"):
        TrainSpec.from_dict({"optimizer": "adamz"})


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name, torch_name, groups", _RADAM_ADAMAX)
def test_radam_and_adamax_match_torch_for_200_steps(name, torch_name, groups, dtype):
    """200 steps on a state-dependent gradient (so any differing update is carried on), one
    or two parameter groups: float64 within 1e-12 of torch, float32 (torch in float32 too)
    within 1e-4 relative; the parameters stay in their dtype."""
    rng = np.random.default_rng(1)
    values = [rng.normal(size=s).astype(dtype) for s in ((4, 3), (3,), (2, 2))]
    ps = [Parameter(f"p{i}", v.copy()) for i, v in enumerate(values)]
    ts = [torch.tensor(v.copy(), requires_grad=True) for v in values]
    if len(groups) == 1:
        opt = get_optimizer(name, ps, lr=1e-2, **groups[0])
        topt = getattr(torch.optim, torch_name)(ts, lr=1e-2, **groups[0])
    else:
        opt = get_optimizer(name, [{"params": ps[:2], **groups[0]},
                                   {"params": ps[2:], **groups[1]}], lr=1e-2)
        topt = getattr(torch.optim, torch_name)([{"params": ts[:2], **groups[0]},
                                                 {"params": ts[2:], **groups[1]}], lr=1e-2)
    tol = 1e-12 if dtype == np.float64 else 1e-4
    for _ in range(200):
        for p, t in zip(ps, ts):
            g = (rng.normal(size=p.value.shape) + 0.1 * p.value).astype(dtype)
            p.grad = g.copy()
            t.grad = torch.tensor(g.copy())
        opt.step()
        topt.step()
    for p, t in zip(ps, ts):
        assert p.value.dtype == dtype
        want = t.detach().numpy()
        assert np.max(np.abs(p.value - want) / np.maximum(np.abs(want), 1e-3)) < tol


@pytest.mark.parametrize("name", ["radam", "adamax"])
def test_fit_trains_with_radam_and_adamax(name):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4))
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    net = dl.mlp([4, 16, 2], "tanh", seed=0)
    history = dl.fit(net, x, y, optimizer=name, lr=1e-2, epochs=20, batch_size=16, seed=0)
    losses = history.epochs_frame()["train_loss"].to_numpy()
    assert losses[-1] < 0.7 * losses[0]
    assert history.final()["train_acc"] > 0.85
