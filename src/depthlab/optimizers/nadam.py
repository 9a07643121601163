"""NAdam: Adam with Nesterov momentum and a momentum-decay schedule (``torch.optim.NAdam``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..backend import xp
from ..parameter import Parameter
from .base import Optimizer, check_betas, check_flag, check_number


class NAdam(Optimizer):
    """NAdam as in ``torch.optim.NAdam`` (Dozat 2016).

    ``mu_t = beta1 * (1 - 0.5 * 0.96^(t * momentum_decay))``, ``P_t = prod_{i<=t} mu_i``;
    ``d = ±g (+ wd*w unless decoupled)``; ``m = lerp(m, d, 1-beta1)``;
    ``v = beta2*v + (1-beta2)*d^2``; ``den = sqrt(v / (1-beta2^t)) + eps``;
    ``w -= lr*(1-mu_t)/(1-P_t) * d/den + lr*mu_{t+1}/(1-P_t*mu_{t+1}) * m/den``.
    With ``decoupled_weight_decay`` ``w *= 1 - lr*wd`` first.

    ``P_t`` is a Python float (float64). torch keeps it as a scalar tensor of its default
    dtype: with ``torch.set_default_dtype(torch.float64)`` the two agree to rounding; with
    torch's float32 default its ``P_t`` is rounded to float32 each step, and a float64
    network's weights differ from torch's by up to about ``1e-8 * lr``.
    """

    name = "nadam"
    _state_scalars = ("mu_product",)

    def __init__(self, params: Iterable[Parameter], lr: float = 2e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, momentum_decay: float = 4e-3,
                 decoupled_weight_decay: bool = False, *, maximize: bool = False) -> None:
        super().__init__(params, lr, weight_decay=weight_decay, maximize=maximize)
        self.betas = check_betas(betas)
        self.eps = check_number("eps", eps)
        self.momentum_decay = check_number("momentum_decay", momentum_decay)
        self.decoupled_weight_decay = check_flag("decoupled_weight_decay",
                                                 decoupled_weight_decay)
        self.mu_product = 1.0


    @property
    def _coupled_wd(self) -> bool:
        return self.weight_decay != 0.0 and not self.decoupled_weight_decay

    def _n_scratch(self) -> int:
        return 2  # den is used twice; slot 1 doubles as g + wd*w

    def _init_state(self, p: Parameter) -> dict[str, Any]:
        return {"exp_avg": xp.zeros_like(p.value), "exp_avg_sq": xp.zeros_like(p.value)}

    def _update(self, t: int) -> None:
        lr, eps, md = self.lr, self.eps, self.momentum_decay
        beta1, beta2 = self.betas
        bc2 = 1 - beta2**t
        mu = beta1 * (1.0 - 0.5 * (0.96 ** (t * md)))
        mu_next = beta1 * (1.0 - 0.5 * (0.96 ** ((t + 1) * md)))
        self.mu_product *= mu
        mu_product_next = self.mu_product * mu_next
        c_grad = -lr * (1.0 - mu) / (1.0 - self.mu_product)
        c_avg = (-lr * mu_next) / (1.0 - mu_product_next)
        shrink = 1.0 - lr * self.weight_decay
        decay_first = self.decoupled_weight_decay and self.weight_decay != 0.0
        for p in self.params:
            a, b = self._scratch[p]
            w, m, v, d, sign = self._adam_moments(p, beta1, beta2, shrink, decay_first, a, b)
            xp.divide(v, bc2, out=a)
            xp.sqrt(a, out=a)
            a += eps
            xp.divide(d, a, out=b)
            b *= c_grad * sign
            w += b
            xp.divide(m, a, out=b)
            b *= c_avg
            w += b
