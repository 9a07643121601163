"""Round 38 (tdochunt38): the torch doctor's reading of an optimizer given as a
``functools.partial`` without ``lr``."""

from __future__ import annotations

import functools

import pytest
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


ASYNC_FACTORY = """
from torch import nn


async def make():
    return nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 2))
"""


def test_an_async_factory_is_one_line_naming_async_def_without_a_never_awaited_warning(
        tmp_path, capsys):
    """``async def make()`` returns a coroutine: the refusal was right, but the coroutine was
    left unawaited, so Python added 'RuntimeWarning: coroutine 'make' was never awaited' and
    a tracemalloc hint under the CLI's one line (and a warning after the API's error)."""
    import gc
    import warnings

    from depthlab.cli import main

    path = tmp_path / "m.py"
    path.write_text(ASYNC_FACTORY)
    namespace: dict = {}
    exec(compile(ASYNC_FACTORY, str(path), "exec"), namespace)
    x, y = _xy()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(TypeError, match=r"coroutine \(an async def function: define it "
                                            r"with def\)"):
            dlt.doctor(namespace["make"], (x, y), steps=2, verify=False)
        code = main(["doctor", "--torch", f"{path}:make", "--data", "digits", "--n", "100"])
        gc.collect()
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "async def" in err[0], err
    assert not [w for w in caught if "never awaited" in str(w.message)]
