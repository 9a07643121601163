"""The engine's compiled kernels for tests that compare them with the NumPy definitions."""

from __future__ import annotations

from depthlab import accel


def load_engine_kernels(monkeypatch):
    """The engine's kernels loaded afresh, as a long run has them (`accel.kernels()`), with the
    process's cached state restored after the test."""
    monkeypatch.setitem(accel._state, "kernels", accel._UNSET)
    k = accel.kernels()
    assert k is not None
    return k
