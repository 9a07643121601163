"""Gradient clipping with ``torch.nn.utils``' names and rules, on depthlab parameters' ``.grad``.

* :func:`clip_grad_norm_`: ``N = ||(||g_1||_p, ..., ||g_k||_p)||_p`` (the p-norm of all the
  gradients as one vector; ``p = inf``: ``max |g|``), then every ``g *= min(1, max_norm /
  (N + 1e-6))`` in place; returns ``N``.
* :func:`clip_grad_value_`: every ``g = clip(g, -clip_value, clip_value)`` in place.

Call them between ``net.backward`` and ``opt.step()``, as torch's between ``loss.backward()``
and ``optimizer.step()``. Norms are summed in float64; the scale is applied in the gradient's
dtype (float32 gradients stay float32).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any

import numpy as np

from ..backend import xp
from ..parameter import Parameter

__all__ = ["clip_grad_norm_", "clip_grad_value_"]

_EPS = 1e-6
"""torch's ``clip_coef = max_norm / (total_norm + 1e-6)``."""


def _grads(parameters: Parameter | Iterable[Parameter], what: str) -> list[np.ndarray]:
    """The ``.grad`` arrays of ``parameters`` (one Parameter or an iterable of them; a
    ``.grad`` of None is skipped, as torch skips parameters without a gradient)."""
    if isinstance(parameters, Parameter):
        parameters = [parameters]
    if callable(getattr(parameters, "parameters", None)):
        raise TypeError(f"{what}: parameters must be depthlab Parameter objects, got a "
                        f"{type(parameters).__name__}; pass its .parameters()")
    try:
        plist = list(parameters)
    except TypeError:
        raise TypeError(f"{what}: parameters must be an iterable of depthlab Parameter "
                        f"objects, got {type(parameters).__name__}") from None
    grads = []
    for p in plist:
        if not isinstance(p, Parameter):
            raise TypeError(f"{what}: parameters must be depthlab Parameter objects, got "
                            f"{type(p).__name__}")
        if p.grad is None:
            continue
        if not (isinstance(p.grad, np.ndarray) and p.grad.flags.writeable):
            p.grad = xp.array(p.grad, dtype=p.value.dtype)  # a scalar or list set by hand:
        grads.append(p.grad)                                  # an array, changed in place
    return grads


def check_clip(name: str, value: Any, *, allow_inf: bool = True) -> float:
    """``float(value)`` of a real number >= 0 (not NaN; bools refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number >= 0, got {value!r:.60}")
    v = float(value)
    if math.isnan(v) or v < 0 or (math.isinf(v) and not allow_inf):
        raise ValueError(f"invalid {name} value: {value!r}; expected a number >= 0")
    return v


def _norm_type(norm_type: Any) -> float:
    """torch's ``float(norm_type)``: a real number or the text ``'inf'``."""
    if isinstance(norm_type, str) and norm_type.strip().lower() in ("inf", "+inf", "-inf"):
        return float(norm_type)
    if isinstance(norm_type, bool) or not isinstance(norm_type, numbers.Real) \
            or math.isnan(float(norm_type)):
        raise TypeError(f"norm_type must be a real number or 'inf', got {norm_type!r:.60}")
    return float(norm_type)


def _foreach(value: Any) -> None:
    """torch's ``foreach``: None or a bool (NumPy has one code path: no effect)."""
    if value is not None and not isinstance(value, bool):
        raise TypeError(f"foreach={value!r:.60} is not accepted; accepted: None, True, False")


def clip_grad_norm_(parameters: Parameter | Iterable[Parameter], max_norm: float,
                    norm_type: float | str = 2.0, error_if_nonfinite: bool = False,
                    foreach: bool | None = None) -> float:
    """Scale every gradient by ``min(1, max_norm / (N + 1e-6))`` in place, ``N`` the p-norm
    (``norm_type``) of all the gradients together, ``N = ||(||g_1||_p, ..., ||g_k||_p)||_p``;
    returns ``N`` (torch's ``torch.nn.utils.clip_grad_norm_``; 0 for no gradients). A
    non-finite ``N`` scales them by NaN or 0 as torch does, or with ``error_if_nonfinite`` is
    a RuntimeError with nothing changed. ``foreach`` (torch's kernel choice) is accepted and
    has no effect."""
    _foreach(foreach)
    grads = _grads(parameters, "clip_grad_norm_")
    max_norm = check_clip("max_norm", max_norm)
    p = _norm_type(norm_type)
    if not grads:
        return 0.0
    # divide: a negative norm_type raises a zero entry to a negative power (torch: no warning)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        norms = xp.array([xp.linalg.norm(xp.asarray(g, dtype=np.float64).ravel(), ord=p)
                          for g in grads])
        total = float(xp.linalg.norm(norms, ord=p))
    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError(f"The total norm of order {p} for gradients from `parameters` is "
                           "non-finite, so it cannot be clipped. To disable this error and "
                           "scale the gradients by the non-finite norm anyway, set "
                           "`error_if_nonfinite=False`")
    coef = max_norm / (total + _EPS)
    if coef > 1.0:  # torch's clamp(max=1.0): a NaN coefficient stays NaN
        coef = 1.0
    with np.errstate(invalid="ignore"):
        for g in grads:
            g *= coef  # a Python float: float32 gradients stay float32
    return total


def clip_grad_value_(parameters: Parameter | Iterable[Parameter], clip_value: float,
                     foreach: bool | None = None) -> None:
    """``g = clip(g, -clip_value, clip_value)`` for every gradient, in place
    (``torch.nn.utils.clip_grad_value_``; ``foreach`` accepted, no effect)."""
    _foreach(foreach)
    grads = _grads(parameters, "clip_grad_value_")
    c = check_clip("clip_value", clip_value)
    for g in grads:
        xp.clip(g, -c, c, out=g)
