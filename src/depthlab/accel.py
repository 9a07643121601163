"""Which code runs the engine's elementwise hot path: compiled kernels or NumPy.

With Numba installed (``pip install depthlab[fast]``) the bias add and bias gradient of
``Dense``, the backward of the sigmoid, tanh and ReLU activations, the ReLU forward and the SGD
update run as the one-pass kernels of :mod:`depthlab.kernels`; without it (or with
``DEPTHLAB_ENGINE_KERNELS=numpy``) as the NumPy expression beside each call, which defines the
result. The two paths give the same bits (see :mod:`depthlab.kernels`), so the choice changes
the time of a step, never its numbers, and a run may switch paths between two steps.

When: loading the kernels costs 0.3-1 s (Numba's import and its code generator; the machine code
itself is cached on disk as for the probe kernels, :mod:`depthlab.probes.accel`) and saves about
11% of a step, so by default (``DEPTHLAB_ENGINE_KERNELS`` unset or ``auto``) the engine runs the
NumPy path for its first :data:`LOAD_AFTER_S` seconds and loads the kernels at the first step
after that (rent, then buy: a short run, a test or a small command, never pays the load, a long
one loses at most about the load's cost). ``DEPTHLAB_ENGINE_KERNELS=numba`` loads them at the
first step, as :func:`kernels` and :func:`warm_up` do. ``import depthlab`` never loads
Numba. Where the kernels cannot be loaded the NumPy path is used with a warning.
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

ENV = "DEPTHLAB_ENGINE_KERNELS"
"""Environment variable: ``numpy`` (never load the compiled engine kernels), ``numba`` (load
them at the first step) or ``auto`` (the default: after :data:`LOAD_AFTER_S`)."""

LOAD_AFTER_S = 3.0
"""Seconds (wall time since the engine's first step in this process) after which the default
mode loads the kernels: about the load's cost divided by the share of a step they save."""

KERNEL_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
"""Array dtypes the kernels are compiled for; other dtypes take the NumPy path."""

_UNSET = object()
_state: dict[str, object] = {"kernels": _UNSET, "since": None}


def _load() -> ModuleType | None:
    k: ModuleType | None = None
    if os.environ.get(ENV, "").strip().lower() != "numpy":
        try:
            from . import kernels as k
        except ImportError:  # Numba not installed (or unusable with this NumPy)
            k = None
        except (OSError, RuntimeError) as err:  # e.g. no writable cache directory
            warnings.warn(f"depthlab: compiled engine kernels unavailable ({err}); using NumPy",
                          RuntimeWarning, stacklevel=3)
            k = None
    _state["kernels"] = k
    return k


def _pending() -> ModuleType | None:
    """While undecided: the kernels once they are to be loaded (module docstring), else None."""
    now = time.perf_counter()
    since = _state["since"]
    if since is None:
        _state["since"] = now
        mode = os.environ.get(ENV, "").strip().lower()
        if mode == "numpy":
            _state["kernels"] = None
            return None
        if mode == "numba":
            return _load()
        return None
    return _load() if now - since >= LOAD_AFTER_S else None  # type: ignore[operator]


def kernels() -> ModuleType | None:
    """The kernels module, or None when the NumPy path is to be used (Numba missing, or
    ``DEPTHLAB_ENGINE_KERNELS=numpy``), loaded now if they were not (Numba's import and code
    generator: 0.3-1 s)."""
    k = _state["kernels"]
    return _load() if k is _UNSET else k  # type: ignore[return-value]


_F32, _F64 = KERNEL_DTYPES
_NDARRAY = np.ndarray


def fits(x: np.ndarray, y: np.ndarray) -> ModuleType | None:
    """The kernels module, if they are loaded or due now (module docstring), when ``x`` (the
    array a kernel writes) and ``y`` are writable C-contiguous ``ndarray`` s of at least one
    dimension and one dtype of :data:`KERNEL_DTYPES` (the kernels' compiled types); else None:
    the NumPy path, which also gives today's errors (a read-only ``x``). Called by every
    layer at every step, so it reads only what it must (about 0.4 us)."""
    k = _state["kernels"]
    if k is None:
        return None
    if k is _UNSET:
        k = _pending()
        if k is None:
            return None
    dt = x.dtype
    if (dt is _F32 or dt is _F64) and y.dtype is dt and x.__class__ is _NDARRAY \
            and y.__class__ is _NDARRAY and x.ndim and y.ndim:
        fx, fy = x.flags, y.flags
        if fx.c_contiguous and fy.c_contiguous and fx.writeable and fy.writeable:
            return k  # type: ignore[return-value]
    return None


def warm_up(dtypes: Sequence[Any] = KERNEL_DTYPES) -> dict[str, float]:
    """Load the kernels now and load (or compile) each for the ``dtypes`` (default float32 and
    float64; others are ignored); returns the seconds spent, ``{"import": ..., "kernels": ...}``
    (``kernels`` is 0 without them)."""
    t0 = time.perf_counter()
    k = kernels()
    t1 = time.perf_counter()
    if k is not None:
        wanted = {np.dtype(v) for v in dtypes}
        for dt in (d for d in KERNEL_DTYPES if d in wanted):
            y = np.zeros((2, 3), dtype=dt)
            b = np.zeros(3, dtype=dt)
            k.add_rows(y, b)
            k.column_sum(y, b)
            k.negate_over(y, y, 0.0)
            k.sigmoid_tail(y)
            k.sigmoid_backward(y, y)
            k.tanh_backward(y, y)
            k.relu_forward(y, y)
            k.relu_backward(y, y)
            k.sub_scaled(y, y, dt.type(0))
            k.sub_scaled(b, b, dt.type(0))
            coef = np.zeros(3, dtype=dt)
            coef.flags.writeable = False  # (SGD passes read-only coefficients)
            k.momentum_step(y, y, y, coef, False)
            k.momentum_step(b, b, b, coef, False)
            z = np.ones((2, 3), dtype=dt)  # (the softmax cross-entropy's passes)
            sums = np.ones((2, 1), dtype=dt)
            k.shift_rows(z, y)
            k.normalize_rows(z, sums)
            k.subtract_pick(y, sums, np.zeros(2, dtype=np.intp), b[:2])
            k.softmax_grad(z, np.zeros(2, dtype=np.intp), coef[:1], y)
    return {"import": t1 - t0, "kernels": time.perf_counter() - t1}


@contextmanager
def numpy_only() -> Iterator[None]:
    """Within the block the engine takes the NumPy path (tests compare the two paths)."""
    saved = _state["kernels"]
    _state["kernels"] = None
    try:
        yield
    finally:
        _state["kernels"] = saved
