"""Fixed-bin histograms of activations, pre-activations, back-propagated gradients and weights.

Bin edges are chosen once per (layer, kind) at the first histogram a recorder takes, so
histograms from different steps can be compared bin by bin:

* ``act`` of a bounded activation (sigmoid, tanh, softsign, ...): the activation's range,
  ``[f(-1e6), f(1e6)]``;
* otherwise from that first step's data: ``[0, HISTOGRAM_MARGIN * max x]`` when every entry is
  >= 0 (ReLU outputs), else the symmetric ``[-m, m]`` with ``m = HISTOGRAM_MARGIN * max|x|``.

Values outside the edges are counted in the outermost bins (so the counts of a histogram sum
to the number of finite entries); NaN entries are not counted.
"""

from __future__ import annotations

import numpy as np

from ..activations import ActivationFn
from ..backend import Array

HISTOGRAM_KINDS: tuple[str, ...] = ("pre", "act", "grad", "weight")
"""``pre`` = s, ``act`` = f(s), ``grad`` = dL/ds, ``weight`` = entries of the feeding W."""

HISTOGRAM_MARGIN = 1.5
"""Data-derived ranges are widened by this factor to leave room for later growth."""

BOUNDED_LIMIT = 100.0
"""An activation with ``|f(+-1e6)| <= BOUNDED_LIMIT`` is treated as bounded."""


def activation_range(fn: ActivationFn) -> tuple[float, float] | None:
    """``(f(-1e6), f(1e6))`` sorted, for a bounded activation; None when unbounded."""
    with np.errstate(all="ignore"):
        v = np.asarray(fn.forward(np.array([-1e6, 1e6], dtype=np.float64)), dtype=np.float64)
    if not np.all(np.isfinite(v)) or np.max(np.abs(v)) > BOUNDED_LIMIT:
        return None
    lo, hi = float(v.min()), float(v.max())
    return (lo, hi) if hi > lo else None


def choose_edges(kind: str, x: Array, fn: ActivationFn | None = None) -> tuple[float, float]:
    """The histogram range ``(lo, hi)`` for ``kind`` from the first observed array ``x``."""
    if kind not in HISTOGRAM_KINDS:
        raise ValueError(f"unknown histogram kind {kind!r}; expected one of {HISTOGRAM_KINDS}")
    if kind == "act" and fn is not None:
        r = activation_range(fn)
        if r is not None:
            return r
    finite = x[np.isfinite(x)] if not np.all(np.isfinite(x)) else x
    if finite.size == 0:
        return (-1.0, 1.0)
    lo, hi = float(finite.min()), float(finite.max())
    if lo >= 0.0:
        top = HISTOGRAM_MARGIN * hi
        return (0.0, top if top > 0 else 1.0)
    m = HISTOGRAM_MARGIN * max(abs(lo), abs(hi))
    return (-m, m)


def bin_counts(x: Array, lo: float, hi: float, n_bins: int) -> np.ndarray:
    """Counts of the entries of ``x`` in ``n_bins`` equal bins over ``[lo, hi]``
    (bin ``i`` = ``[lo + i w, lo + (i + 1) w)``, the last bin closed); values beyond the range go
    to the end bins, NaNs are dropped. Returns int64 counts of length ``n_bins``."""
    if not hi > lo:
        raise ValueError(f"histogram range must have hi > lo, got ({lo}, {hi})")
    flat = x.reshape(-1)
    scale = n_bins / (hi - lo)
    with np.errstate(all="ignore"):
        pos = flat - x.dtype.type(lo) if x.dtype.kind == "f" else flat - lo
        pos *= scale
        np.clip(pos, 0, n_bins - 1, out=pos)
    if not np.all(np.isfinite(pos)):
        pos = pos[np.isfinite(pos)]
    return np.bincount(pos.astype(np.intp), minlength=n_bins)[:n_bins].astype(np.int64)


def bin_edges(lo: float, hi: float, n_bins: int) -> np.ndarray:
    """The ``n_bins + 1`` edges of :func:`bin_counts`."""
    return np.linspace(lo, hi, n_bins + 1)
