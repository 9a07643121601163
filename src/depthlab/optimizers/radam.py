"""RAdam, Adam with a rectified adaptive learning rate (``torch.optim.RAdam``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from ..backend import xp
from ..parameter import Parameter
from .base import Optimizer, check_betas, check_flag, check_number


class RAdam(Optimizer):
    """RAdam as in ``torch.optim.RAdam`` (Liu et al. 2020).

    ``d = ±g (+ wd*w unless decoupled)``; ``m = lerp(m, d, 1-beta1)``;
    ``v = beta2*v + (1-beta2)*d^2``; ``rho_inf = 2/(1-beta2) - 1``,
    ``rho_t = rho_inf - 2 t beta2^t / (1-beta2^t)``. When ``rho_t > 5``:
    ``w -= m/(1-beta1^t) * lr * sqrt(1-beta2^t)/(sqrt(v) + eps) * r_t`` with
    ``r_t = sqrt((rho_t-4)(rho_t-2) rho_inf / ((rho_inf-4)(rho_inf-2) rho_t))``; otherwise
    (the first steps) ``w -= m/(1-beta1^t) * lr``. With ``decoupled_weight_decay``
    ``w *= 1 - lr*wd`` first. Torch's order of operations (``a / s`` of a scalar ``s`` as
    a division, ``s / a`` as ``reciprocal(a) * s``), so the steps agree to rounding.
    """

    name = "radam"

    def __init__(self, params: Iterable[Parameter], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, decoupled_weight_decay: bool = False, *,
                 maximize: bool = False) -> None:
        super().__init__(params, lr, weight_decay=weight_decay, maximize=maximize)
        self.betas = check_betas(betas)
        self.eps = check_number("eps", eps)
        self.decoupled_weight_decay = check_flag("decoupled_weight_decay",
                                                 decoupled_weight_decay)

    @property
    def _coupled_wd(self) -> bool:
        return self.weight_decay != 0.0 and not self.decoupled_weight_decay

    def _n_scratch(self) -> int:
        return 2  # the corrected average and the adaptive factor; slot 1 doubles as g + wd*w

    def _init_state(self, p: Parameter) -> dict[str, Any]:
        return {"exp_avg": xp.zeros_like(p.value), "exp_avg_sq": xp.zeros_like(p.value)}

    def _update(self, t: int) -> None:
        lr, eps = self.lr, self.eps
        beta1, beta2 = self.betas
        step = float(t)
        bc1 = 1 - beta1**step
        bc2 = 1 - beta2**step
        rho_inf = 2 / (1 - beta2) - 1
        rho_t = rho_inf - 2 * step * (beta2**step) / bc2
        rectified = rho_t > 5.0
        rect = (((rho_t - 4) * (rho_t - 2) * rho_inf
                 / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5 if rectified else 1.0)
        bc2_sqrt = bc2**0.5
        shrink = 1.0 - lr * self.weight_decay
        decay_first = self.decoupled_weight_decay and self.weight_decay != 0.0
        for p in self.params:
            a, b = self._scratch[p]
            w, m, v, _, _ = self._adam_moments(p, beta1, beta2, shrink, decay_first, a, b)
            xp.divide(m, bc1, out=a)           # m / (1 - beta1^t)
            a *= lr
            if rectified:
                xp.sqrt(v, out=b)              # d is no longer needed
                b += eps
                with np.errstate(divide="ignore"):  # eps = 0, v = 0: inf as torch's
                    xp.reciprocal(b, out=b)
                b *= bc2_sqrt                  # sqrt(1 - beta2^t) / (sqrt(v) + eps)
                a *= b
                a *= rect
            w -= a
