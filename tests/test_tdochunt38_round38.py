"""Round 38 (tdochunt38): the torch doctor's reading of an optimizer given as a
``functools.partial`` without ``lr``."""

from __future__ import annotations

import functools

import torch
from torch import nn

import depthlab.torch as dlt


def _xy():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 6, generator=g)
    return x, (x[:, 0] > 0).long()


def _mlp():
    return nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 2))


def test_a_partial_without_lr_trains_at_the_lr_it_builds_as_a_lambda_does():
    """``functools.partial(torch.optim.SGD, momentum=0.9)`` called on parameters builds SGD at
    torch's lr 1e-3, as ``lambda p: torch.optim.SGD(p, momentum=0.9)`` does; the doctor read
    the lambda at 1e-3 but the partial at its own SGD default 0.1: 100x the step the user's
    own loop takes, the same optimizer diagnosed at two learning rates."""
    x, y = _xy()
    run = functools.partial(dlt.doctor, _mlp, (x, y), steps=4, batch_size=16, verify=False)
    by_lambda = run(optimizer=lambda p: torch.optim.SGD(p, momentum=0.9))
    by_partial = run(optimizer=functools.partial(torch.optim.SGD, momentum=0.9))
    built = functools.partial(torch.optim.SGD, momentum=0.9)([nn.Parameter(torch.zeros(1))])
    assert by_lambda.settings["lr"] == built.defaults["lr"]
    for key in ("optimizer", "lr", "optimizer_kwargs"):
        assert by_partial.settings[key] == by_lambda.settings[key], key
    assert by_partial.baseline["train_loss"] == by_lambda.baseline["train_loss"]
    # a partial that gives its lr reads as before, and the name keeps depthlab's SGD default
    d = run(optimizer=functools.partial(torch.optim.SGD, lr=0.05, momentum=0.9))
    assert (d.settings["lr"], d.settings["optimizer_kwargs"]) == (0.05, {"momentum": 0.9})
    assert run(optimizer="sgd").settings["lr"] == 0.1
