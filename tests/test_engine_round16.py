"""Round 16 regressions of the NumPy engine: training loop, optimizers, losses, layers."""

from __future__ import annotations

import numpy as np
import pytest

import depthlab as dl
from depthlab.training import Trainer


def _blobs(n: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    r = np.random.default_rng(seed)
    x = r.normal(size=(n, 3))
    return x, (x[:, 0] > 0).astype(int)


def test_max_steps_alone_trains_that_many_steps_as_a_train_section_does():
    # fit(..., max_steps=10) on 64 rows in batches of 32 stopped after one epoch of 2 steps
    # (Trainer's own default epochs=1), while a [train] section with max_steps alone runs
    # 10 updates (TrainSpec: epochs is 1 only when max_steps is not given either)
    x, y = _blobs()
    hist = dl.fit(dl.mlp([3, 8, 2], seed=0), x, y, max_steps=10)
    assert len(hist.step_loss) == 10
    assert dl.TrainSpec(max_steps=10).epochs is None
    # neither given: one epoch; both given: whichever ends first
    assert len(dl.fit(dl.mlp([3, 8, 2], seed=0), x, y).step_loss) == 2
    assert len(dl.fit(dl.mlp([3, 8, 2], seed=0), x, y, epochs=2, max_steps=10).step_loss) == 4
    assert len(dl.fit(dl.mlp([3, 8, 2], seed=0), x, y, epochs=9, max_steps=5).step_loss) == 5
    # a second fit continues for max_steps more updates
    tr = Trainer(dl.mlp([3, 8, 2], seed=0), max_steps=3)
    tr.fit(x, y)
    tr.fit(x, y)
    assert tr.step == 6 and len(tr.history.step_loss) == 6


def test_get_optimizer_refuses_arguments_for_an_optimizer_instance_instead_of_ignoring_them():
    # dl.optimizer(adam_instance, params, lr=0.5, amsgrad=True) returned the instance with
    # lr 0.1 and amsgrad off, silently (a built loss or activation refuses arguments)
    net = dl.mlp([3, 4, 2], seed=0)
    opt = dl.optimizer("adam", net.parameters(), lr=0.1)
    with pytest.raises(TypeError, match=r"\['amsgrad', 'lr'\].*Adam.*optimizer\.amsgrad = True"):
        dl.optimizer(opt, net.parameters(), lr=0.5, amsgrad=True)
    assert opt.lr == 0.1 and opt.amsgrad is False
    assert dl.optimizer(opt, net.parameters()) is opt
    # fit with the instance and no other hyperparameter trains with the instance's own
    x, y = _blobs(8)
    dl.fit(net, x, y, optimizer=opt)
    assert opt.step_count == 1 and opt.lr == 0.1
