"""Finite-difference helpers for tests (float64, central differences)."""

from __future__ import annotations

import numpy as np


def numeric_grad(f, x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """d f / d x by central differences; ``f`` maps an array to a float."""
    g = np.zeros_like(x)
    flat, gflat = x.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        fp = f(x)
        flat[i] = old - h
        fm = f(x)
        flat[i] = old
        gflat[i] = (fp - fm) / (2 * h)
    return g


def rel_err(a: np.ndarray, b: np.ndarray, floor: float = 1e-6) -> float:
    """max|a - b| / max(max|a|, max|b|, floor): floor keeps all-zero gradients comparable."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(a)), np.max(np.abs(b)), floor))


def fd_err(analytic: np.ndarray, numeric: np.ndarray) -> float:
    """rel_err for finite differences, whose own noise is ~1e-10 in float64."""
    return rel_err(analytic, numeric, floor=1e-3)
