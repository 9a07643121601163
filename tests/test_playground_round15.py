"""Round 15 of adversarial playground testing (a teacher and a learner at the controls).

* a page left training grew the server without bound: the session's ``History`` kept every
  step's loss and every epoch's metrics (about 100 kB/s on the default setup, 360 MB an hour);

Browser tests use Debian's Chromium (they fail, not skip, without it); screenshots go to a
temporary folder (``DEPTHLAB_SCREENSHOTS=DIR`` keeps them in DIR).
"""

from __future__ import annotations

import time

from depthlab.playground import session as session_module
from depthlab.playground.session import Session
from depthlab.playground.setup import parse_setup, to_config


def _wait(cond, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.02)


# -- the server's memory over a long run -------------------------------------------------------
def test_a_long_run_keeps_a_bounded_history(monkeypatch):
    monkeypatch.setattr(session_module, "HISTORY_KEEP", 10)
    s = Session(to_config(parse_setup({"model.depth": "2", "model.width": "4"})),
                lambda m: None).start()
    try:
        _wait(lambda: s.trainer is not None and s.state == "paused")
        s.play()
        # 43 steps an epoch on spirals: 1500 steps are 35 epochs
        _wait(lambda: s.trainer.step >= 1500 and s.trainer.epoch > 30)
        s.pause()
        h = s.trainer.history
        # was: one loss per step (1500+) and one row per epoch (35+), for as long as it trained
        assert 10 <= len(h.step_loss) <= 20, len(h.step_loss)
        assert 10 <= len(h.epochs) <= 20, len(h.epochs)
        # the newest are kept: the last epoch row is the last epoch that ended
        assert h.epochs[-1]["epoch"] in (s.trainer.epoch, s.trainer.epoch - 1), h.epochs[-1]
    finally:
        s.stop(10)
    assert not s.alive
