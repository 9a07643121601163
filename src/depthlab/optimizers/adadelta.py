"""Adadelta (``torch.optim.Adadelta``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..backend import xp
from ..parameter import Parameter
from .base import Optimizer, check_number


class Adadelta(Optimizer):
    """Adadelta as in ``torch.optim.Adadelta`` (Zeiler 2012, with a learning rate).

    ``d = ±g + wd*w``; ``v = rho*v + (1-rho)*d^2``;
    ``delta = sqrt(u + eps) / sqrt(v + eps) * d``; ``u = rho*u + (1-rho)*delta^2``;
    ``w -= lr * delta``.
    """

    name = "adadelta"

    def __init__(self, params: Iterable[Parameter], lr: float = 1.0, rho: float = 0.9,
                 eps: float = 1e-6, weight_decay: float = 0.0, *,
                 maximize: bool = False) -> None:
        super().__init__(params, lr, weight_decay=weight_decay, maximize=maximize)
        self.rho = check_number("rho", rho, high=1.0)
        self.eps = check_number("eps", eps)


    def _init_state(self, p: Parameter) -> dict[str, Any]:
        return {"square_avg": xp.zeros_like(p.value), "acc_delta": xp.zeros_like(p.value)}

    def _n_scratch(self) -> int:
        return 2  # std and sqrt(u + eps) are needed together; slot 1 doubles as g + wd*w

    def _update(self, t: int) -> None:
        lr, rho, eps = self.lr, self.rho, self.eps
        for p in self.params:
            w, work = p.value, self._scratch[p]
            a, b = work
            d, sign = self._direction(p, b)
            st = self.state[p]
            v, u = st["square_avg"], st["acc_delta"]
            v *= rho
            xp.multiply(d, 1.0 - rho, out=a)
            a *= d
            v += a
            if d is b:                        # d lives in slot 1: fold it in first
                xp.add(v, eps, out=a)
                xp.sqrt(a, out=a)
                b /= a                        # d / std
                xp.add(u, eps, out=a)
                xp.sqrt(a, out=a)
                a *= b                        # delta
            else:
                xp.add(u, eps, out=a)
                xp.sqrt(a, out=a)
                xp.add(v, eps, out=b)
                xp.sqrt(b, out=b)
                a /= b
                a *= d                        # delta (times sign)
            u *= rho
            xp.multiply(a, 1.0 - rho, out=b)
            b *= a
            u += b
            a *= lr * sign
            w -= a
