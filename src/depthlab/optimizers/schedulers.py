"""Learning-rate schedules with ``torch.optim.lr_scheduler``'s names, arguments and arithmetic.

A scheduler holds one depthlab optimizer and sets its ``lr``: at construction for epoch 0,
then at each :meth:`LRScheduler.step` (call it after ``opt.step()``, once per epoch or per
update, as in torch). Each rule is torch's chainable form, applied to the optimizer's current
``lr`` (so the learning rates are torch's to the last bit), with ``e`` the scheduler's
``last_epoch`` and ``lr_0`` the optimizer's ``lr`` when the scheduler was built:

* ``StepLR(step_size, gamma=0.1)``: ``lr *= gamma`` when ``e`` is a multiple of ``step_size``;
* ``MultiStepLR(milestones, gamma=0.1)``: ``lr *= gamma^k`` at an epoch listed ``k`` times;
* ``ExponentialLR(gamma)``: ``lr *= gamma`` every step;
* ``LinearLR(start_factor=1/3, end_factor=1, total_iters=5)``: ``lr_0 * start_factor`` at
  epoch 0, then ``lr *= 1 + (end - start) / (T start + (e - 1)(end - start))`` up to ``T``;
* ``CosineAnnealingLR(T_max, eta_min=0)``: ``lr = eta_min + (lr - eta_min) (1 + cos(pi e / T))
  / (1 + cos(pi (e - 1) / T))`` (at ``e - 1 - T`` a multiple of ``2T``: ``lr += (lr_0 -
  eta_min)(1 - cos(pi / T)) / 2``), which follows ``eta_min + (lr_0 - eta_min)(1 + cos(pi e /
  T)) / 2``;
* ``LambdaLR(lr_lambda)``: ``lr = lr_0 * lr_lambda(e)``;
* ``ReduceLROnPlateau(mode, factor, patience, ...)``: ``lr = max(lr * factor, min_lr)`` after
  more than ``patience`` epochs whose metric (``step(metric)``) did not beat the best.
"""

from __future__ import annotations

import math
import numbers
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from .base import Optimizer, check_number

__all__ = ["CosineAnnealingLR", "ExponentialLR", "LRScheduler", "LambdaLR", "LinearLR",
           "MultiStepLR", "ReduceLROnPlateau", "StepLR"]


def _count(name: str, value: Any, low: int = 1) -> int:
    """An integer >= ``low`` (bools refused): TypeError / ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= {low}, got {value!r:.60}")
    if value < low:
        raise ValueError(f"invalid {name} value: {value!r}; expected an integer >= {low}")
    return int(value)


class LRScheduler:
    """Base class: sets ``optimizer.lr`` to :meth:`_next_lr` at epoch 0 (when built) and after
    each :meth:`step`; ``last_epoch`` counts the steps, ``base_lr`` is the optimizer's ``lr``
    when the scheduler was built."""

    def __init__(self, optimizer: Optimizer) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(self).__name__} takes a depthlab optimizer "
                            f"(dl.optimizer(...)), got {type(optimizer).__name__}")
        self.optimizer = optimizer
        self.base_lr = float(optimizer.lr)
        self.last_epoch = 0
        self._set(self._next_lr(float(optimizer.lr)))

    def _set(self, lr: float) -> None:
        self.optimizer.lr = lr  # checked by the optimizer (a finite number >= 0)

    def _next_lr(self, lr: float) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def step(self) -> None:
        """Advance one epoch (``last_epoch += 1``) and set the optimizer's ``lr`` (call it after
        ``opt.step()``)."""
        self.last_epoch += 1
        self._set(self._next_lr(float(self.optimizer.lr)))

    def get_last_lr(self) -> list[float]:
        """``[lr]``, the learning rate the last step set (torch's one per parameter group)."""
        return [float(self.optimizer.lr)]

    def state_dict(self) -> dict[str, Any]:
        """``base_lr`` and ``last_epoch`` (with ``opt.state_dict()``, a run resumes)."""
        return {"base_lr": self.base_lr, "last_epoch": self.last_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s values (the optimizer's ``lr`` comes with its own)."""
        self.base_lr = check_number("base_lr", state["base_lr"])
        self.last_epoch = _count("last_epoch", state["last_epoch"], low=0)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(last_epoch={self.last_epoch}, lr={self.optimizer.lr!r})"


class StepLR(LRScheduler):
    """``lr *= gamma`` every ``step_size`` epochs (torch's ``StepLR``)."""

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1) -> None:
        self.step_size = _count("step_size", step_size)
        self.gamma = check_number("gamma", gamma)
        super().__init__(optimizer)

    def _next_lr(self, lr: float) -> float:
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return lr
        return lr * self.gamma


class MultiStepLR(LRScheduler):
    """``lr *= gamma^k`` at each epoch that ``milestones`` lists ``k`` times (torch's
    ``MultiStepLR``)."""

    def __init__(self, optimizer: Optimizer, milestones: Iterable[int],
                 gamma: float = 0.1) -> None:
        if isinstance(milestones, str) or not isinstance(milestones, Iterable):
            raise TypeError(f"milestones must be a list of epochs, got {milestones!r:.60}")
        self.milestones = Counter(_count("milestone", m, low=0) for m in milestones)
        self.gamma = check_number("gamma", gamma)
        super().__init__(optimizer)

    def _next_lr(self, lr: float) -> float:
        if self.last_epoch not in self.milestones:
            return lr
        return lr * self.gamma ** self.milestones[self.last_epoch]


class ExponentialLR(LRScheduler):
    """``lr *= gamma`` every epoch (torch's ``ExponentialLR``)."""

    def __init__(self, optimizer: Optimizer, gamma: float) -> None:
        self.gamma = check_number("gamma", gamma)
        super().__init__(optimizer)

    def _next_lr(self, lr: float) -> float:
        return lr if self.last_epoch == 0 else lr * self.gamma


class LinearLR(LRScheduler):
    """``lr_0 * start_factor`` at epoch 0, rising (or falling) linearly to ``lr_0 *
    end_factor`` at ``total_iters``, then constant (torch's ``LinearLR``)."""

    def __init__(self, optimizer: Optimizer, start_factor: float = 1.0 / 3,
                 end_factor: float = 1.0, total_iters: int = 5) -> None:
        self.start_factor = check_number("start_factor", start_factor, high=1.0)
        if self.start_factor == 0.0:  # torch: "expected ... > 0 and <= 1"
            raise ValueError(f"invalid start_factor value: {start_factor!r}; expected a finite "
                             "number in (0, 1]")
        self.end_factor = check_number("end_factor", end_factor, high=1.0)
        self.total_iters = _count("total_iters", total_iters)
        super().__init__(optimizer)

    def _next_lr(self, lr: float) -> float:
        e, s, t = self.last_epoch, self.start_factor, self.total_iters
        if e == 0:
            return lr * s
        if e > t:
            return lr
        d = self.end_factor - s
        return lr * (1.0 + d / (t * s + (e - 1) * d))


class CosineAnnealingLR(LRScheduler):
    """``eta_min + (lr_0 - eta_min)(1 + cos(pi e / T_max)) / 2`` by torch's recursion
    (``CosineAnnealingLR``; past ``T_max`` it rises again, as torch's)."""

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0) -> None:  # noqa: N803
        self.T_max = _count("T_max", T_max)
        self.eta_min = check_number("eta_min", eta_min)
        super().__init__(optimizer)

    def _next_lr(self, lr: float) -> float:
        e, t, low = self.last_epoch, self.T_max, self.eta_min
        if e == 0:
            return lr
        if (e - 1 - t) % (2 * t) == 0:
            return lr + (self.base_lr - low) * (1 - math.cos(math.pi / t)) / 2
        return ((1 + math.cos(math.pi * e / t)) / (1 + math.cos(math.pi * (e - 1) / t))
                * (lr - low) + low)


class LambdaLR(LRScheduler):
    """``lr = lr_0 * lr_lambda(e)`` (torch's ``LambdaLR``)."""

    def __init__(self, optimizer: Optimizer, lr_lambda: Callable[[int], float]) -> None:
        if not callable(lr_lambda):
            raise TypeError(f"lr_lambda must be a function of the epoch, got "
                            f"{lr_lambda!r:.60}")
        self.lr_lambda = lr_lambda
        super().__init__(optimizer)

    def _next_lr(self, lr: float) -> float:
        return self.base_lr * self.lr_lambda(self.last_epoch)


class ReduceLROnPlateau:
    """torch's ``ReduceLROnPlateau``: :meth:`step` takes the epoch's metric; after more than
    ``patience`` epochs without improving on the best (``mode="min"``: below ``best (1 -
    threshold)`` for ``threshold_mode="rel"``, ``best - threshold`` for "abs"; "max" mirrored),
    ``lr = max(lr * factor, min_lr)`` (only when that lowers it by more than ``eps``), then
    ``cooldown`` epochs in which bad epochs are not counted."""

    def __init__(self, optimizer: Optimizer, mode: str = "min", factor: float = 0.1,
                 patience: int = 10, threshold: float = 1e-4, threshold_mode: str = "rel",
                 cooldown: int = 0, min_lr: float = 0.0, eps: float = 1e-8) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"ReduceLROnPlateau takes a depthlab optimizer (dl.optimizer(...)), "
                            f"got {type(optimizer).__name__}")
        for name, value, accepted in (("mode", mode, ("min", "max")),
                                      ("threshold_mode", threshold_mode, ("rel", "abs"))):
            if value not in accepted:
                raise ValueError(f"{name}={value!r} is not accepted; accepted: "
                                 f"{', '.join(map(repr, accepted))}")
        self.factor = check_number("factor", factor, high=1.0, high_inclusive=False)
        self.optimizer = optimizer
        self.mode, self.threshold_mode = mode, threshold_mode
        self.patience = _count("patience", patience, low=0)
        self.threshold = check_number("threshold", threshold)
        self.cooldown = _count("cooldown", cooldown, low=0)
        self.min_lr = check_number("min_lr", min_lr)
        self.eps = check_number("eps", eps)
        self.best = math.inf if mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0
        self.last_epoch = 0

    def _is_better(self, a: float) -> bool:
        best, t = self.best, self.threshold
        if self.mode == "min":
            return a < (best * (1.0 - t) if self.threshold_mode == "rel" else best - t)
        return a > (best * (t + 1.0) if self.threshold_mode == "rel" else best + t)

    def step(self, metrics: float) -> None:
        """Read this epoch's ``metrics`` (a number; NaN never improves) and lower ``lr`` after
        a plateau (torch's rule, the class docstring)."""
        if isinstance(metrics, bool) or not isinstance(metrics, numbers.Real):
            raise TypeError(f"ReduceLROnPlateau.step(metrics) takes a number, got "
                            f"{metrics!r:.60}")
        current = float(metrics)
        self.last_epoch += 1
        if self._is_better(current):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            old = float(self.optimizer.lr)
            new = max(old * self.factor, self.min_lr)
            if old - new > self.eps:
                self.optimizer.lr = new
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0

    def get_last_lr(self) -> list[float]:
        """``[lr]``, the optimizer's learning rate now."""
        return [float(self.optimizer.lr)]
