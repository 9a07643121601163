"""Round 16 of the torch doctor: optimizers given as torch.optim classes, ... (see each test)."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from torch import nn

import depthlab.torch as dlt


def _xy(n=80, d=6, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randint(0, k, (n,), generator=g)


def _mlp():
    return nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 3))


def test_an_optimizer_given_as_a_torch_optim_class_trains_as_its_name():
    x, y = _xy()
    run = functools.partial(dlt.doctor, _mlp, (x, y), steps=4, batch_size=16, verify=False)
    by_name = run(optimizer=("adam", {"lr": 0.01, "betas": (0.8, 0.99)}))
    for opt in ((torch.optim.Adam, {"lr": 0.01, "betas": (0.8, 0.99)}),
                functools.partial(torch.optim.Adam, lr=0.01, betas=(0.8, 0.99))):
        d = run(optimizer=opt)
        assert d.settings["optimizer"] == "adam" and d.settings["lr"] == 0.01
        assert d.baseline["train_loss"] == by_name.baseline["train_loss"]
    d = run(optimizer=torch.optim.RMSprop)
    assert (d.settings["optimizer"], d.settings["lr"]) == ("rmsprop", 1e-3)
    with pytest.raises(TypeError, match=r"torch\.optim\.lbfgs\.LBFGS is not supported; "
                                        r"expected one of torch\.optim\.SGD"):
        run(optimizer=torch.optim.LBFGS)
    with pytest.raises(TypeError) as e:  # an instance: one line, not its many-line repr
        run(optimizer=torch.optim.SGD(_mlp().parameters(), lr=0.05))
    assert "\n" not in str(e.value) and "SGD instance" in str(e.value)
    assert "('sgd', {'lr': 0.05})" in str(e.value)
    with pytest.raises(TypeError) as e:
        run(optimizer=np.float64(0.1))
    assert "optimizer must be a name or (name, kwargs)" in str(e.value)
