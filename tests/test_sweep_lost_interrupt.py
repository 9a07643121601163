"""A Ctrl-C that lands inside a garbage-collector callback (Dask's ``GCDiagnosis``: Python
prints "Exception ignored in ..." and drops the KeyboardInterrupt) still stops the sweep: it
is raised again in the main thread, with no traceback printed (a ``--cluster local:2`` sweep
ran on and hung in CI)."""

from __future__ import annotations

import gc
import os
import signal
import time

import pytest

from depthlab.cli.sweep import _signals


def test_an_interrupt_swallowed_by_a_gc_callback_is_raised_again(capsys):
    fired = []

    def callback(phase, info):
        if phase == "start" and not fired:
            fired.append(1)
            os.kill(os.getpid(), signal.SIGINT)
            t = time.monotonic()
            while time.monotonic() - t < 0.2:  # the handler runs here, inside the callback
                pass

    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        with _signals() as seen:
            gc.callbacks.append(callback)
            try:
                gc.collect()
                assert fired
                while time.monotonic() - t0 < 5:  # the sweep's work goes on meanwhile
                    time.sleep(0.01)
            finally:
                gc.callbacks.remove(callback)
    assert seen == [signal.SIGINT]
    assert time.monotonic() - t0 < 3
    assert "Traceback" not in capsys.readouterr().err
    # a call inside a program (not the process's own `depthlab sweep`) gives its Ctrl-C back:
    # it was left ignored, and a later interrupt in the program never came
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
