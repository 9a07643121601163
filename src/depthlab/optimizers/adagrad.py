"""Adagrad (``torch.optim.Adagrad``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..backend import xp
from ..parameter import Parameter
from .base import Optimizer, check_number


class Adagrad(Optimizer):
    """Adagrad as in ``torch.optim.Adagrad``.

    ``d = ±g + wd*w``; ``s += d*d`` (``s`` starts at ``initial_accumulator_value``);
    ``w -= clr * d / (sqrt(s) + eps)`` with ``clr = lr / (1 + (t - 1) * lr_decay)``.
    With parameter groups ``s`` starts at the constructor's ``initial_accumulator_value`` in
    every group, as torch's (``self.defaults``; a group's own value is not read).
    """

    name = "adagrad"

    def __init__(self, params: Iterable[Parameter], lr: float = 1e-2, lr_decay: float = 0.0,
                 weight_decay: float = 0.0, initial_accumulator_value: float = 0.0,
                 eps: float = 1e-10, *, maximize: bool = False) -> None:
        super().__init__(params, lr, weight_decay=weight_decay, maximize=maximize)
        self.lr_decay = check_number("lr_decay", lr_decay)
        self.initial_accumulator_value = check_number(
            "initial_accumulator_value", initial_accumulator_value)
        self.eps = check_number("eps", eps)


    def _init_state(self, p: Parameter) -> dict[str, Any]:
        # torch starts every group's sum at the constructor's value (self.defaults), a
        # group's own initial_accumulator_value is kept but not read
        start = getattr(self, "defaults", {}).get("initial_accumulator_value",
                                                  self.initial_accumulator_value)
        return {"sum": xp.full_like(p.value, start)}

    def state_dict(self) -> dict[str, Any]:
        """:meth:`Optimizer.state_dict`; before the first step each parameter's ``sum`` is its
        starting value ``s_0 = initial_accumulator_value`` (torch's Adagrad creates its sums in
        its constructor, so its state_dict holds them from the start): an Adagrad built with
        other settings that loads it goes on from ``s_0``, as torch's does (it started from
        its own ``initial_accumulator_value``: 20 steps ended 5e-3 away from torch's)."""
        out = super().state_dict()
        if self._groups is None and not self.state:
            out["state"] = [{"sum": self._init_state(p)["sum"]} for p in self.params]
        return out

    def _update(self, t: int) -> None:
        clr = self.lr / (1 + (t - 1) * self.lr_decay)
        eps = self.eps
        for p in self.params:
            w, work = p.value, self._scratch[p]
            tmp = work[0]
            d, sign = self._direction(p, work[-1])
            acc = self.state[p]["sum"]
            xp.multiply(d, d, out=tmp)
            acc += tmp
            xp.sqrt(acc, out=tmp)
            tmp += eps
            xp.divide(d, tmp, out=tmp)
            tmp *= clr * sign
            w -= tmp
