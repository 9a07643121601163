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


def interrupt_in_a_gc_callback(before: float = 0.0) -> tuple[float, list[int]]:
    """A SIGINT delivered inside a garbage-collector callback, after the collection has run
    ``before`` seconds (the handler raises there and Python discards the KeyboardInterrupt);
    returns the seconds from the return of ``gc.collect()`` until the interrupt is raised
    again in the main thread, and the signals ``_signals`` saw. Nothing can be raised before
    ``gc.collect()`` returns (the collection is C code), so a slow collection (a large heap,
    a loaded host) does not count; an interrupt never raised again fails after 20 s."""
    fired = []
    back = [0.0]

    def callback(phase, info):
        if phase == "start" and not fired:
            fired.append(1)
            t = time.monotonic()
            while time.monotonic() - t < before:  # the collection's work before the signal
                pass
            os.kill(os.getpid(), signal.SIGINT)
            t = time.monotonic()
            while time.monotonic() - t < 0.2:  # the handler runs here, inside the callback
                pass

    with pytest.raises(KeyboardInterrupt):
        with _signals() as seen:
            gc.callbacks.append(callback)
            try:
                try:
                    gc.collect()
                finally:  # also when the interrupt comes right at the return
                    back[0] = time.monotonic()
                assert fired
                while time.monotonic() - back[0] < 20:  # the sweep's work goes on meanwhile
                    time.sleep(0.01)
            finally:
                gc.callbacks.remove(callback)
    return time.monotonic() - back[0], list(seen)


def test_an_interrupt_swallowed_by_a_gc_callback_is_raised_again(capsys):
    delay, seen = interrupt_in_a_gc_callback()
    assert seen == [signal.SIGINT]
    assert delay < 3
    assert "Traceback" not in capsys.readouterr().err
    # a call inside a program (not the process's own `depthlab sweep`) gives its Ctrl-C back:
    # it was left ignored, and a later interrupt in the program never came
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
