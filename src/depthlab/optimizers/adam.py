"""Adam and AMSGrad (``torch.optim.Adam``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..backend import xp
from ..parameter import Parameter
from .base import Optimizer, check_betas, check_flag, check_number


class Adam(Optimizer):
    """Adam as in ``torch.optim.Adam``.

    ``d = ±g (+ wd*w unless decoupled)``; ``m = lerp(m, d, 1-beta1)``;
    ``v = beta2*v + (1-beta2)*d^2`` (``amsgrad``: ``vmax = max(vmax, v)`` is used instead);
    ``w -= lr/(1-beta1^t) * m / (sqrt(v)/sqrt(1-beta2^t) + eps)``. With
    ``decoupled_weight_decay`` (AdamW) ``w *= 1 - lr*wd`` first.
    """

    name = "adam"

    def __init__(self, params: Iterable[Parameter], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, amsgrad: bool = False, *, maximize: bool = False,
                 decoupled_weight_decay: bool = False) -> None:
        super().__init__(params, lr, weight_decay=weight_decay, maximize=maximize)
        self.betas = check_betas(betas)
        self.eps = check_number("eps", eps)
        self.amsgrad = check_flag("amsgrad", amsgrad)
        self.decoupled_weight_decay = check_flag("decoupled_weight_decay",
                                                 decoupled_weight_decay)


    @property
    def _coupled_wd(self) -> bool:
        return self.weight_decay != 0.0 and not self.decoupled_weight_decay

    def _init_state(self, p: Parameter) -> dict[str, Any]:
        st = {"exp_avg": xp.zeros_like(p.value), "exp_avg_sq": xp.zeros_like(p.value)}
        if self.amsgrad:
            st["max_exp_avg_sq"] = xp.zeros_like(p.value)
        return st

    def _update(self, t: int) -> None:
        lr, eps = self.lr, self.eps
        beta1, beta2 = self.betas
        step_size = lr / (1 - beta1**t)
        bc2_sqrt = (1 - beta2**t) ** 0.5
        shrink = 1.0 - lr * self.weight_decay
        decay_first = self.decoupled_weight_decay and self.weight_decay != 0.0
        for p in self.params:
            work = self._scratch[p]
            tmp = work[0]
            w, m, v, _, _ = self._adam_moments(p, beta1, beta2, shrink, decay_first, tmp, work[-1])
            if self.amsgrad:
                vmax = self._buffer(p, "max_exp_avg_sq")
                xp.maximum(vmax, v, out=vmax)
                v = vmax
            xp.sqrt(v, out=tmp)
            tmp /= bc2_sqrt
            tmp += eps
            xp.divide(m, tmp, out=tmp)
            tmp *= step_size
            w -= tmp


class AdamW(Adam):
    """AdamW as in ``torch.optim.AdamW``: :class:`Adam` with decoupled weight decay
    (``w *= 1 - lr*wd`` before the Adam step) and torch's default ``weight_decay = 1e-2``."""

    name = "adamw"

    def __init__(self, params: Iterable[Parameter], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False, *,
                 maximize: bool = False) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize,
                         decoupled_weight_decay=True)
