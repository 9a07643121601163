"""Adamax, Adam with the infinity norm (``torch.optim.Adamax``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..backend import xp
from ..parameter import Parameter
from .base import Optimizer, check_betas, check_number, lerp


class Adamax(Optimizer):
    """Adamax as in ``torch.optim.Adamax`` (Kingma & Ba 2015, section 7.1).

    ``d = ±g + wd*w``; ``m = lerp(m, d, 1-beta1)``; ``u = max(beta2*u, |d| + eps)``;
    ``w -= lr/(1-beta1^t) * m/u``.
    """

    name = "adamax"

    def __init__(self, params: Iterable[Parameter], lr: float = 2e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, *, maximize: bool = False) -> None:
        super().__init__(params, lr, weight_decay=weight_decay, maximize=maximize)
        self.betas = check_betas(betas)
        self.eps = check_number("eps", eps)

    def _init_state(self, p: Parameter) -> dict[str, Any]:
        return {"exp_avg": xp.zeros_like(p.value), "exp_inf": xp.zeros_like(p.value)}

    def _update(self, t: int) -> None:
        lr, eps = self.lr, self.eps
        beta1, beta2 = self.betas
        clr = lr / (1 - beta1 ** float(t))
        for p in self.params:
            w, work = p.value, self._scratch[p]
            tmp = work[0]
            d, sign = self._direction(p, work[-1])
            st = self.state[p]
            m, u = st["exp_avg"], st["exp_inf"]
            lerp(m, d, sign, 1.0 - beta1, tmp)
            u *= beta2
            xp.abs(d, out=tmp)                 # |sign * d| = |d|
            tmp += eps
            xp.maximum(u, tmp, out=u)
            xp.divide(m, u, out=tmp)
            tmp *= clr
            w -= tmp
