"""RMSprop, plain or centered, with optional momentum (``torch.optim.RMSprop``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from ..backend import Array, xp
from ..parameter import Parameter
from .base import Optimizer, axpy, check_flag, check_number, lerp


def _square_below_overflow(m: Array, out: Array) -> None:
    """``out = m * m``, where that overflows the dtype (a float32 gradient of 1e30) the largest
    finite number instead of inf: then ``v = inf`` (``d^2`` overflowed too) gives ``v - m^2 =
    inf``, a step of 0, as torch's fused ``v - m*m`` does (NumPy's ``inf - inf`` made the
    weight NaN). The extra pass runs only when the product overflowed (NumPy's overflow flag);
    the usual step pays the flag's check, about 1 us per parameter."""
    try:
        with np.errstate(over="raise"):
            xp.multiply(m, m, out=out)
        return
    except FloatingPointError:
        pass
    with np.errstate(over="ignore"):
        xp.multiply(m, m, out=out)
    xp.minimum(out, np.finfo(out.dtype).max, out=out)


class RMSprop(Optimizer):
    """RMSprop as in ``torch.optim.RMSprop``.

    ``d = ±g + wd*w``; ``v = alpha*v + (1-alpha)*d^2`` (``alpha`` in [0, 1]; in (0, 1] when
    ``centered``: at 0 the centered variance below is ``d^2 - d^2 = 0``);
    ``den = sqrt(v) + eps``, or when ``centered`` ``m = lerp(m, d, 1-alpha)`` and
    ``den = sqrt(v - m^2) + eps``. With ``momentum``: ``b = momentum*b + d/den``,
    ``w -= lr*b``; else ``w -= lr*d/den``.

    torch's CPU kernels (``addcmul``, ``lerp``) round each multiply-add once (FMA), NumPy
    twice: last-bit differences, which ``v - m^2`` multiplies by ``m^2 / (v - m^2)`` when the
    gradient barely varies (centered, a constant gradient for 3000 steps at alpha = 0.99: 2%
    apart, both at |w| ~ 7e5; alpha = 0.9 and a gradient noise of 1e-4: 1e-8 apart).
    Where ``m^2`` overflows the dtype (a float32 gradient of 1e30, ``v = inf`` too) it is
    taken as the largest finite number, so ``v - m^2 = inf`` and the step is 0, as torch's
    fused ``v - m*m`` gives (NumPy's ``inf - inf`` made the weight NaN).
    """

    name = "rmsprop"

    def __init__(self, params: Iterable[Parameter], lr: float = 1e-2, alpha: float = 0.99,
                 eps: float = 1e-8, weight_decay: float = 0.0, momentum: float = 0.0,
                 centered: bool = False, *, maximize: bool = False) -> None:
        super().__init__(params, lr, weight_decay=weight_decay, maximize=maximize)
        self.alpha = check_number("alpha", alpha, high=1.0)  # alpha > 1: a negative average
        self.eps = check_number("eps", eps)
        self.momentum = check_number("momentum", momentum)
        self.centered = check_flag("centered", centered)
        if self.centered and self.alpha == 0.0:
            # m = d and v = d^2 each step: v - m^2 is 0 (a step of lr * d / eps) or, in torch's
            # fused addcmul, a rounding error below 0 (NaN steps); no setting of either
            raise ValueError(f"invalid alpha value: {alpha!r} with centered=True; expected "
                             "alpha in (0, 1] (alpha = 0 makes the centered variance "
                             "v - m^2 = g^2 - g^2 = 0)")


    def _init_state(self, p: Parameter) -> dict[str, Any]:
        st = {"square_avg": xp.zeros_like(p.value)}
        if self.momentum > 0:
            st["momentum_buffer"] = xp.zeros_like(p.value)
        if self.centered:
            st["grad_avg"] = xp.zeros_like(p.value)
        return st

    def _update(self, t: int) -> None:
        lr, alpha, eps, mom = self.lr, self.alpha, self.eps, self.momentum
        for p in self.params:
            w, work = p.value, self._scratch[p]
            tmp = work[0]
            d, sign = self._direction(p, work[-1])
            st = self.state[p]
            v = st["square_avg"]
            v *= alpha
            xp.multiply(d, 1.0 - alpha, out=tmp)
            tmp *= d
            v += tmp
            if self.centered:
                m = self._buffer(p, "grad_avg")
                lerp(m, d, sign, 1.0 - alpha, tmp)
                _square_below_overflow(m, tmp)
                xp.subtract(v, tmp, out=tmp)
                xp.sqrt(tmp, out=tmp)
            else:
                xp.sqrt(v, out=tmp)
            tmp += eps
            xp.divide(d, tmp, out=tmp)
            if mom > 0:
                buf = self._buffer(p, "momentum_buffer")
                buf *= mom
                axpy(buf, sign, tmp, None)
                xp.multiply(buf, lr, out=tmp)
                w -= tmp
            else:
                tmp *= lr * sign
                w -= tmp
