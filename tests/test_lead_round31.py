"""Round 31 (lead): a callback that ends the run itself (``Callback.ends_run``) makes it
open-ended, so the history check added this round does not refuse it: the playground trains
with ``max_steps=10**12`` until its user stops it (it trims the history itself) and was refused
at its first setup ("the training history of 1,000,000,000,000 updates ... 33 TiB")."""

from __future__ import annotations

import numpy as np

import depthlab as dl
from depthlab.playground.session import _Gate
from depthlab.training.trainer import Callback


class _StopAfter(Callback):
    """Ends the run after ``n`` updates (a user's own stopping rule)."""

    ends_run = True

    def __init__(self, n: int) -> None:
        self.n = n
        self.planned: list = []

    def on_train_begin(self, trainer) -> None:
        self.planned.append(trainer.planned_steps)

    def after_update(self, trainer, step: int, loss: float) -> None:
        if step >= self.n:
            trainer.stop()


def test_a_callback_that_ends_the_run_makes_a_huge_budget_open_ended(monkeypatch):
    monkeypatch.setenv("DEPTHLAB_MEMORY_LIMIT", "64M")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 4)).astype(np.float32), np.arange(16) % 3
    stop = _StopAfter(5)
    hist = dl.fit(dl.mlp([4, 5, 3], seed=0), x, y, loss="cross_entropy", batch_size=4,
                  epochs=None, max_steps=10**12, seed=0, callbacks=[stop])
    assert hist.steps == 5 and stop.planned == [None]
    assert _Gate.ends_run and dl.EarlyStopping.ends_run and not Callback.ends_run
