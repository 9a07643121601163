"""Which code computes the probe statistics: compiled kernels or NumPy.

With Numba installed (``pip install depthlab[fast]``) the statistics, order statistics,
histogram counts and update ratios are computed by the one-pass kernels of
:mod:`depthlab.probes.kernels`; without it (or with ``DEPTHLAB_PROBE_KERNELS=numpy``) by the
NumPy code beside each kernel's caller, which defines the results (see
:mod:`depthlab.probes.kernels` for how closely the two agree). Numba is imported on the first
measurement, never by ``import depthlab``; its compiled code is cached on disk, so later
processes load it instead of compiling (:func:`warm_up` reports the time). Numba looks for a
writable cache directory in order: ``NUMBA_CACHE_DIR``, ``__pycache__`` beside
``kernels.py``, then the user's cache directory (``~/.cache/numba``); with none writable it
cannot load the kernels, and the NumPy path is used with a warning.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import ModuleType
from typing import Any

import numpy as np

ENV = "DEPTHLAB_PROBE_KERNELS"
"""Environment variable: ``numpy`` disables the compiled kernels (default: use them if Numba
is installed)."""

KERNEL_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
"""Array dtypes the kernels are compiled for; other dtypes take the NumPy path."""

_UNSET = object()
_state: dict[str, object] = {"kernels": _UNSET}


def kernels() -> ModuleType | None:
    """The kernels module, or None when the NumPy path is to be used (Numba missing, or
    ``DEPTHLAB_PROBE_KERNELS=numpy``). The first call imports Numba (about 0.3 s)."""
    k = _state["kernels"]
    if k is _UNSET:
        k = None
        if os.environ.get(ENV, "").strip().lower() != "numpy":
            try:
                from . import kernels as k
            except ImportError:  # Numba not installed (or unusable with this NumPy)
                k = None
            except (OSError, RuntimeError) as err:  # e.g. no writable cache directory
                warnings.warn(f"depthlab: compiled probe kernels unavailable ({err}); "
                              f"using NumPy", RuntimeWarning, stacklevel=2)
                k = None
        _state["kernels"] = k
    return k  # type: ignore[return-value]


def available() -> bool:
    """True when the compiled kernels are in use."""
    return kernels() is not None


MAX_ENTRIES = 2**31 - 1
"""Largest array the kernels take (their counters are 32-bit)."""


def for_array(x: np.ndarray) -> ModuleType | None:
    """The kernels module if ``x``'s dtype is one they are compiled for and it has at most
    :data:`MAX_ENTRIES` entries, else None."""
    k = kernels()
    return k if k is not None and x.dtype in KERNEL_DTYPES and x.size <= MAX_ENTRIES else None


@contextmanager
def numpy_only() -> Iterator[None]:
    """Within the block every statistic takes the NumPy path (tests compare the two paths)."""
    saved = _state["kernels"]
    _state["kernels"] = None
    try:
        yield
    finally:
        _state["kernels"] = saved


def warm_up(dtypes: Sequence[Any] = KERNEL_DTYPES) -> dict[str, float]:
    """Import Numba and load (or compile) every kernel for the ``dtypes`` (default float32
    and float64; others are ignored); returns the seconds spent:
    ``{"import": ..., "kernels": ...}`` (``kernels`` is 0 without Numba). A process whose
    cache is warm loads the machine code; a cold cache compiles it."""
    t0 = time.perf_counter()
    k = kernels()
    t1 = time.perf_counter()
    if k is not None:
        wanted = {np.dtype(v) for v in dtypes}
        for dtype in (d for d in KERNEL_DTYPES if d in wanted):
            x = np.linspace(-1.0, 1.0, 64, dtype=dtype)
            k.moments(x, 0.0)
            m = x.reshape(8, 8)
            ranks = np.array([3, 60], dtype=np.intp)
            ranks.flags.writeable = False  # as the cached percentile plans hold them
            t = np.array([0.5])
            t.flags.writeable = False
            k.select(x, ranks, -1.0, 1.0)
            k.layer(m, m, m, k.DERIVATIVE_GIVEN, 0.5, k.FAMILY_OTHER, x, x, x, ranks, t, True,
                    x[:0])
            k.bin_counts(x, -1.0, 2.0, 4, 1.0)
            ranks4 = np.array([0, 1, 62, 63], dtype=np.intp)
            ranks4.flags.writeable = False
            t2 = np.array([0.5, 0.5])
            t2.flags.writeable = False
            k.histogram(x, x, -1.0, 1.0, -1.0, 1.0, ranks4, t2, 4, True, -0.5, 0.5, 1e-30,
                        1e30)
            w = np.linspace(-1.0, 1.0, k.EXTREME_FROM, dtype=dtype)
            k.histogram_whole(w, ranks4, t2, 4, True, -0.5, 0.5, 1e-30, 1e30)
            k.update_norms(x, x)
            k.finite_range(x)
    return {"import": t1 - t0, "kernels": time.perf_counter() - t1}
