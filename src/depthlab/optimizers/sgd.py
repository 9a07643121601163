"""Stochastic gradient descent with momentum, dampening and Nesterov (``torch.optim.SGD``)."""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from types import ModuleType
from typing import Any

import numpy as np

from .. import accel
from ..backend import Array, xp
from ..parameter import Parameter
from .base import Optimizer, axpy, check_flag, check_number


class SGD(Optimizer):
    """SGD as in ``torch.optim.SGD``.

    ``d = ±g + wd*w`` (minus when ``maximize``). Without momentum ``w -= lr*d``. With momentum
    ``mu``: ``b = d`` at the first step, then ``b = mu*b + (1 - dampening)*d``; the step is
    ``w -= lr*(d + mu*b)`` with ``nesterov`` and ``w -= lr*b`` otherwise.
    """

    name = "sgd"

    def __init__(self, params: Iterable[Parameter], lr: float = 1e-3, momentum: float = 0.0,
                 dampening: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False, *,
                 maximize: bool = False) -> None:
        super().__init__(params, lr, weight_decay=weight_decay, maximize=maximize)
        self.momentum = check_number("momentum", momentum)
        self.dampening = check_number("dampening", dampening, low=-float("inf"))
        nesterov = check_flag("nesterov", nesterov)
        if nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError(
                "Nesterov momentum requires momentum > 0 and dampening == 0, got "
                f"momentum={momentum!r}, dampening={dampening!r}"
            )
        self.nesterov = nesterov


    def _init_state(self, p: Parameter) -> dict[str, Any]:
        return {}  # the momentum buffer is made at its first use (torch clones the gradient)

    def _update(self, t: int) -> None:
        lr, mu = self.lr, self.momentum
        keep = 1.0 - self.dampening
        if mu == 0:
            self._plain_update(lr)
            return
        for p in self.params:
            w, work = p.value, self._scratch[p]
            tmp = work[0]
            d, sign = self._direction(p, work[-1])
            st = self.state[p]
            buf = st.get("momentum_buffer")
            if buf is None:  # b = d (torch clones the gradient), also for a momentum set later
                buf = st["momentum_buffer"] = xp.empty_like(p.value)  # 0-d: an array too
                xp.multiply(d, sign, out=buf)
            elif (k := _fused(w, buf, d)) is not None:  # the steps below, one pass (kernels)
                k.momentum_step(w, buf, d, _coefficients(w.dtype, mu, keep * sign, lr),
                                self.nesterov)
                continue
            else:
                buf *= mu
                axpy(buf, keep * sign, d, tmp)
            if self.nesterov:
                xp.multiply(buf, mu, out=tmp)
                axpy(tmp, sign, d, None)           # d + mu*b
                tmp *= lr
            else:
                k = accel.fits(w, buf)
                if k is not None:  # w -= lr b in one pass (depthlab.kernels)
                    k.sub_scaled(w, buf, w.dtype.type(lr))
                    continue
                xp.multiply(buf, lr, out=tmp)
            w -= tmp

    def _plain_update(self, lr: float) -> None:
        """``w -= (lr sign) G`` for every parameter (no momentum), with ``(G, sign)`` of
        :meth:`~depthlab.optimizers.base.Optimizer._direction`: one compiled pass per parameter
        where the kernels fit (``lr sign`` rounded to the parameter's dtype once per step and
        dtype), else ``tmp = G (lr sign)``, ``w -= tmp`` (the NumPy definition, same bits)."""
        scaled: dict[Any, Any] = {}
        scratch = self._scratch
        for p in self.params:
            w = p.value
            d, sign = self._direction(p, scratch[p][-1])
            k = accel.fits(w, d)
            if k is None:
                tmp = scratch[p][0]
                xp.multiply(d, lr * sign, out=tmp)
                w -= tmp
                continue
            dt = w.dtype  # the same, one pass (depthlab.kernels)
            c = scaled.get(dt)
            if c is None:  # (one sign per step: coupled decay's is 1, the plain one fixed)
                c = scaled[dt] = dt.type(lr * sign)
            k.sub_scaled(w, d, c)


def _coefficients(dtype: np.dtype, mu: float, c: float, lr: float) -> Array:
    """``[mu, c, lr]`` rounded to ``dtype`` (as NumPy rounds a Python float operand of an array
    of that dtype), read-only: the compiled momentum step's coefficients, made once per
    setting (a NumPy scalar argument costs the kernel call several microseconds). A zero is
    not looked up (``0.0 == -0.0`` for the cache, not for the bits of ``w - 0 b``)."""
    if mu and c and lr:
        return _cached_coefficients(dtype, mu, c, lr)
    return _coefficient_array(dtype, mu, c, lr)


def _coefficient_array(dtype: np.dtype, mu: float, c: float, lr: float) -> Array:
    out = np.array([mu, c, lr], dtype=dtype)
    out.flags.writeable = False
    return out


_cached_coefficients = lru_cache(maxsize=64)(_coefficient_array)


def _fused(w: Array, buf: Array, d: Array) -> ModuleType | None:
    """The kernels module when the compiled momentum step may run (``w``, ``buf`` and ``d``
    writable C-contiguous ndarrays of one kernel dtype and of one shape,
    :func:`depthlab.accel.fits`, the gradient not the buffer or the value itself), else None
    (the NumPy steps)."""
    k = accel.fits(w, buf)
    if k is None or d.shape != w.shape or buf.shape != w.shape or d is buf or d is w:
        return None  # (a gradient that is the buffer itself: the NumPy steps' reading)
    return accel.fits(buf, d)
