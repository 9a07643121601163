"""Regression tests of the lead's fixes in round 16."""

from __future__ import annotations

import numpy as np
import pytest

import depthlab as dl
from depthlab.training import Callback, Trainer


class _CtrlC(Callback):
    """Presses Ctrl-C (raises KeyboardInterrupt) after the update of step ``at``."""

    def __init__(self, at: int) -> None:
        self.at = at

    def after_update(self, trainer, step, loss):
        if step == self.at:
            raise KeyboardInterrupt


def test_a_history_stopped_by_ctrl_c_says_interrupted_not_finished():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 4)).astype("float32")
    y = np.arange(64) % 2
    stop = _CtrlC(3)
    trainer = Trainer(dl.mlp([4, 8, 2]), batch_size=8, epochs=2, callbacks=[stop])
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(x, y)
    hist = trainer.history
    assert hist.steps == 3
    assert hist.status == "interrupted"
    assert "interrupted" in repr(hist) and "finished" not in repr(hist)
    stop.at = -1  # a later fit that runs to its end
    assert trainer.fit(x, y).status == "finished"
