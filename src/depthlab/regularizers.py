"""L1/L2 weight penalties (weights only: never biases or batch-norm parameters).

``penalty = l1 * sum|w| + l2 * sum w^2``; gradient ``l1 * sign(w) + 2 * l2 * w``
(``sign(0) = 0``). PyTorch's ``weight_decay = wd`` corresponds to ``l2 = wd / 2``.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from .losses import _sum_squares
from .parameter import Parameter
from .validators import real


def _check(l1: float, l2: float) -> None:
    """A finite real number >= 0 each (NumPy numbers too): TypeError for a bool or a
    non-number, ValueError naming the value otherwise."""
    for label, v in (("l1", l1), ("l2", l2)):
        real(f"{label} penalty", v, low=0.0)


def penalty(params: Iterable[Parameter], l1: float = 0.0, l2: float = 0.0) -> float:
    """``l1 * sum|w| + l2 * sum w^2`` over parameters with ``regularized`` set."""
    _check(l1, l2)
    total = 0.0
    if l1 == 0.0 and l2 == 0.0:
        return total
    for p in params:
        if p.regularized:
            w = p.value.ravel()
            if l1:  # float64 sums: a float32 weight matrix of 10**6 entries summed its
                total += l1 * float(np.abs(w).sum(dtype=np.float64))  # squares 1.2e-6 off
            if l2:
                total += l2 * _sum_squares(w)
    return total


def add_penalty_gradient(params: Iterable[Parameter], l1: float = 0.0, l2: float = 0.0) -> None:
    """``p.grad += l1 * sign(w) + 2 * l2 * w`` in place, for weights only."""
    _check(l1, l2)
    if l1 == 0.0 and l2 == 0.0:
        return
    for p in params:
        if p.regularized:
            if l2:
                p.grad += (2.0 * l2) * p.value
            if l1:
                p.grad += l1 * np.sign(p.value)
