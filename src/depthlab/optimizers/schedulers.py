"""Learning-rate schedules with ``torch.optim.lr_scheduler``'s names, arguments and arithmetic.

A scheduler holds one depthlab optimizer and sets its ``lr``: at construction for epoch 0,
then at each :meth:`LRScheduler.step` (call it after ``opt.step()``, once per epoch or per
update, as in torch). Each rule is torch's chainable form, applied to the optimizer's current
``lr`` (so the learning rates are torch's to the last bit), with ``e`` the scheduler's
``last_epoch`` and ``lr_0`` the optimizer's ``lr`` when its first scheduler was built
(torch's ``initial_lr``, kept as ``optimizer.initial_lr``: a second scheduler on the same
optimizer starts from it too, not from the lr the first one set). ``last_epoch`` (torch's,
default -1: a fresh schedule) resumes one: the optimizer's ``lr`` is taken as that epoch's
and ``initial_lr`` must be set:

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
* ``MultiplicativeLR(lr_lambda)``: ``lr *= lr_lambda(e)`` from epoch 1;
* ``ConstantLR(factor=1/3, total_iters=5)``: ``lr_0 * factor`` before ``total_iters``, then
  ``lr_0``;
* ``PolynomialLR(total_iters=5, power=1)``: ``lr_0 (1 - min(e, T) / T)^power``;
* ``CosineAnnealingWarmRestarts(T_0, T_mult=1, eta_min=0)``: the cosine from ``lr_0`` to
  ``eta_min`` over ``T_i`` epochs, restarted (``T_i *= T_mult``);
* ``SequentialLR(schedulers, milestones)`` runs each from its milestone on (warm-up, then a
  decay), ``ChainedScheduler(schedulers)`` steps them all;
* ``ReduceLROnPlateau(mode, factor, patience, ...)``: ``lr = max(lr * factor, min_lr)`` after
  more than ``patience`` epochs whose metric (``step(metric)``) did not beat the best.
"""

from __future__ import annotations

import bisect
import math
import numbers
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from .base import Optimizer, check_number

__all__ = ["ChainedScheduler", "ConstantLR", "CosineAnnealingLR", "CosineAnnealingWarmRestarts",
           "ExponentialLR", "LRScheduler",
           "LambdaLR", "LinearLR", "MultiStepLR", "MultiplicativeLR", "PolynomialLR",
           "ReduceLROnPlateau", "SequentialLR", "StepLR"]


def _count(name: str, value: Any, low: int = 1) -> int:
    """An integer >= ``low`` (bools refused): TypeError / ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= {low}, got {value!r:.60}")
    if value < low:
        raise ValueError(f"invalid {name} value: {value!r}; expected an integer >= {low}")
    return int(value)


class LRScheduler:
    """Base class: sets ``optimizer.lr`` to :meth:`_next_lr` at epoch 0 (when built) and after
    each :meth:`step`; ``last_epoch`` counts the steps, ``base_lr`` is the optimizer's
    ``initial_lr`` (its ``lr`` when its first scheduler was built, as torch's)."""

    def __init__(self, optimizer: Optimizer, last_epoch: int = -1) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(self).__name__} takes a depthlab optimizer "
                            f"(dl.optimizer(...)), got {type(optimizer).__name__}")
        last_epoch = _count("last_epoch", last_epoch, low=-1)
        self.optimizer = optimizer
        if getattr(optimizer, "initial_lr", None) is None:  # torch's group["initial_lr"]
            if last_epoch != -1:
                raise ValueError(f"last_epoch={last_epoch} resumes a schedule, which starts "
                                 "from the optimizer's initial_lr (its lr before any scheduler, "
                                 "torch's param_groups[0]['initial_lr']): set "
                                 "optimizer.initial_lr first")
            optimizer.initial_lr = float(optimizer.lr)
        self.base_lr = float(optimizer.initial_lr)
        self.last_epoch = last_epoch + 1  # torch's _initial_step: one step from last_epoch
        self._initial_step()

    def _initial_step(self) -> None:
        """Set epoch 0's lr (torch's ``_initial_step``: the rules that leave the lr alone when
        built read ``_initial``)."""
        self._initial = True
        try:
            self._set(self._next_lr(float(self.optimizer.lr)))
        finally:
            self._initial = False

    def _set(self, lr: float) -> None:
        self.optimizer.lr = lr  # checked by the optimizer (a finite number >= 0)

    def _next_lr(self, lr: float) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def _closed_form(self, lr: float) -> float:
        """The lr at ``last_epoch`` from ``base_lr`` (torch's ``_get_closed_form_lr``, which
        :class:`SequentialLR` reads at a milestone); the chained rule where torch has none."""
        return self._next_lr(lr)

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
        # -1: a scheduler of a SequentialLR that has not started yet (torch's undo)
        self.last_epoch = _count("last_epoch", state["last_epoch"], low=-1)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(last_epoch={self.last_epoch}, lr={self.optimizer.lr!r})"


class StepLR(LRScheduler):
    """``lr *= gamma`` every ``step_size`` epochs (torch's ``StepLR``)."""

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1,
                 last_epoch: int = -1) -> None:
        self.step_size = _count("step_size", step_size)
        self.gamma = check_number("gamma", gamma)
        super().__init__(optimizer, last_epoch)

    def _next_lr(self, lr: float) -> float:
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return lr
        return lr * self.gamma

    def _closed_form(self, lr: float) -> float:
        return self.base_lr * self.gamma ** (self.last_epoch // self.step_size)


class MultiStepLR(LRScheduler):
    """``lr *= gamma^k`` at each epoch that ``milestones`` lists ``k`` times (torch's
    ``MultiStepLR``)."""

    def __init__(self, optimizer: Optimizer, milestones: Iterable[int],
                 gamma: float = 0.1, last_epoch: int = -1) -> None:
        if isinstance(milestones, str) or not isinstance(milestones, Iterable):
            raise TypeError(f"milestones must be a list of epochs, got {milestones!r:.60}")
        self.milestones = Counter(_count("milestone", m, low=0) for m in milestones)
        self.gamma = check_number("gamma", gamma)
        super().__init__(optimizer, last_epoch)

    def _next_lr(self, lr: float) -> float:
        if self.last_epoch not in self.milestones:
            return lr
        return lr * self.gamma ** self.milestones[self.last_epoch]

    def _closed_form(self, lr: float) -> float:
        passed = sum(k for m, k in self.milestones.items() if m <= self.last_epoch)
        return self.base_lr * self.gamma ** passed


class ExponentialLR(LRScheduler):
    """``lr *= gamma`` every epoch (torch's ``ExponentialLR``)."""

    def __init__(self, optimizer: Optimizer, gamma: float, last_epoch: int = -1) -> None:
        self.gamma = check_number("gamma", gamma)
        super().__init__(optimizer, last_epoch)

    def _next_lr(self, lr: float) -> float:
        return lr if self._initial else lr * self.gamma  # built (or resumed): as it is

    def _closed_form(self, lr: float) -> float:
        return self.base_lr * self.gamma ** self.last_epoch


class LinearLR(LRScheduler):
    """``lr_0 * start_factor`` at epoch 0, rising (or falling) linearly to ``lr_0 *
    end_factor`` at ``total_iters``, then constant (torch's ``LinearLR``)."""

    def __init__(self, optimizer: Optimizer, start_factor: float = 1.0 / 3,
                 end_factor: float = 1.0, total_iters: int = 5, last_epoch: int = -1) -> None:
        self.start_factor = check_number("start_factor", start_factor, high=1.0)
        if self.start_factor == 0.0:  # torch: "expected ... > 0 and <= 1"
            raise ValueError(f"invalid start_factor value: {start_factor!r}; expected a finite "
                             "number in (0, 1]")
        self.end_factor = check_number("end_factor", end_factor, high=1.0)
        self.total_iters = _count("total_iters", total_iters)
        super().__init__(optimizer, last_epoch)

    def _next_lr(self, lr: float) -> float:
        e, s, t = self.last_epoch, self.start_factor, self.total_iters
        if e == 0:
            return lr * s
        if self._initial or e > t:  # resumed (last_epoch given): the lr as it is
            return lr
        d = self.end_factor - s
        return lr * (1.0 + d / (t * s + (e - 1) * d))

    def _closed_form(self, lr: float) -> float:
        s, t = self.start_factor, self.total_iters
        return self.base_lr * (s + (self.end_factor - s) * min(t, self.last_epoch) / t)


class CosineAnnealingLR(LRScheduler):
    """``eta_min + (lr_0 - eta_min)(1 + cos(pi e / T_max)) / 2`` by torch's recursion
    (``CosineAnnealingLR``; past ``T_max`` it rises again, as torch's)."""

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0,  # noqa: N803
                 last_epoch: int = -1) -> None:
        self.T_max = _count("T_max", T_max)
        self.eta_min = check_number("eta_min", eta_min)
        super().__init__(optimizer, last_epoch)

    def _next_lr(self, lr: float) -> float:
        e, t, low = self.last_epoch, self.T_max, self.eta_min
        if self._initial:  # built (epoch 0) or resumed: the lr as it is
            return lr
        if (e - 1 - t) % (2 * t) == 0:
            return lr + (self.base_lr - low) * (1 - math.cos(math.pi / t)) / 2
        return ((1 + math.cos(math.pi * e / t)) / (1 + math.cos(math.pi * (e - 1) / t))
                * (lr - low) + low)

    def _closed_form(self, lr: float) -> float:
        low = self.eta_min
        return low + (self.base_lr - low) * (1 + math.cos(math.pi * self.last_epoch /
                                                          self.T_max)) / 2


class _EpochFunction(LRScheduler):
    """A schedule by a user's function of the epoch, ``lr_lambda`` (checked callable)."""

    def __init__(self, optimizer: Optimizer, lr_lambda: Callable[[int], float],
                 last_epoch: int = -1) -> None:
        if not callable(lr_lambda):
            raise TypeError(f"lr_lambda must be a function of the epoch, got "
                            f"{lr_lambda!r:.60}")
        self.lr_lambda = lr_lambda
        super().__init__(optimizer, last_epoch)


class LambdaLR(_EpochFunction):
    """``lr = lr_0 * lr_lambda(e)`` (torch's ``LambdaLR``)."""

    def _next_lr(self, lr: float) -> float:
        return self.base_lr * self.lr_lambda(self.last_epoch)


class MultiplicativeLR(_EpochFunction):
    """``lr *= lr_lambda(e)`` at each step (torch's ``MultiplicativeLR``; epoch 0 keeps lr)."""

    def _next_lr(self, lr: float) -> float:
        return lr if self._initial else lr * self.lr_lambda(self.last_epoch)


class ConstantLR(LRScheduler):
    """``lr_0 * factor`` until epoch ``total_iters``, then ``lr_0`` (torch's ``ConstantLR``,
    a constant warm-up): ``lr *= factor`` at epoch 0, ``lr *= 1 / factor`` at ``total_iters``."""

    def __init__(self, optimizer: Optimizer, factor: float = 1.0 / 3,
                 total_iters: int = 5, last_epoch: int = -1) -> None:
        self.factor = check_number("factor", factor, high=1.0)
        if self.factor == 0.0:  # torch divides by it at total_iters (ZeroDivisionError)
            raise ValueError(f"invalid factor value: {factor!r}; expected a finite number in "
                             "(0, 1]")
        self.total_iters = _count("total_iters", total_iters, low=0)
        super().__init__(optimizer, last_epoch)

    def _next_lr(self, lr: float) -> float:
        if self.last_epoch == 0:
            return lr * self.factor
        if self.last_epoch != self.total_iters:
            return lr
        return lr * (1.0 / self.factor)

    def _closed_form(self, lr: float) -> float:
        f = self.factor
        return self.base_lr * (f + (self.last_epoch >= self.total_iters) * (1 - f))


class PolynomialLR(LRScheduler):
    """``lr_0 (1 - min(e, T) / T)^power`` (torch's ``PolynomialLR``) by its chained rule
    ``lr *= ((1 - e / T) / (1 - (e - 1) / T))^power`` up to ``T = total_iters``."""

    def __init__(self, optimizer: Optimizer, total_iters: int = 5, power: float = 1.0,
                 last_epoch: int = -1) -> None:
        self.total_iters = _count("total_iters", total_iters)
        self.power = check_number("power", power)
        super().__init__(optimizer, last_epoch)

    def _next_lr(self, lr: float) -> float:
        e, t = self.last_epoch, self.total_iters
        if self._initial or e > t:
            return lr
        return lr * ((1.0 - e / t) / (1.0 - (e - 1) / t)) ** self.power

    def _closed_form(self, lr: float) -> float:
        t = self.total_iters
        return self.base_lr * (1.0 - min(t, self.last_epoch) / t) ** self.power


class CosineAnnealingWarmRestarts(LRScheduler):
    """torch's ``CosineAnnealingWarmRestarts``: ``lr = eta_min + (lr_0 - eta_min)(1 + cos(pi
    T_cur / T_i)) / 2``, ``T_cur`` the epochs since the last restart, ``T_i`` the current
    period (``T_0``, times ``T_mult`` at each restart). ``step(epoch)`` also takes a
    fractional epoch (``sched.step(epoch + i / iters)`` within an epoch), as torch's."""

    def __init__(self, optimizer: Optimizer, T_0: int, T_mult: int = 1,  # noqa: N803
                 eta_min: float = 0.0, last_epoch: int = -1) -> None:
        self.T_0 = self.T_i = _count("T_0", T_0)
        self.T_mult = _count("T_mult", T_mult)
        self.eta_min = check_number("eta_min", eta_min)
        self.T_cur: float = _count("last_epoch", last_epoch, low=-1)
        super().__init__(optimizer, last_epoch)

    def _initial_step(self) -> None:
        self.last_epoch -= 1  # torch steps this one from last_epoch itself (-1: epoch 0)
        self.step()

    def state_dict(self) -> dict[str, Any]:
        """The base's state and the restart counters ``T_cur``, ``T_i``."""
        return {**super().state_dict(), "T_cur": self.T_cur, "T_i": self.T_i}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s values."""
        super().load_state_dict(state)
        self.T_cur = check_number("T_cur", state["T_cur"])
        self.T_i = _count("T_i", state["T_i"])

    def _closed_form(self, lr: float) -> float:  # torch's get_lr (it has no closed form)
        low = self.eta_min
        return low + (self.base_lr - low) * (1 + math.cos(math.pi * self.T_cur / self.T_i)) / 2

    def step(self, epoch: float | None = None) -> None:  # type: ignore[override]
        """Advance one epoch, or go to ``epoch`` (a number >= 0, fractions allowed), and set
        the lr (torch's restarts: ``T_cur`` wraps at ``T_i``, which grows by ``T_mult``)."""
        if epoch is None and self.last_epoch < 0:
            epoch = 0
        if epoch is None:
            epoch = self.last_epoch + 1
            self.T_cur = self.T_cur + 1
            if self.T_cur >= self.T_i:
                self.T_cur = self.T_cur % self.T_i
                self.T_i = self.T_i * self.T_mult
        else:
            epoch = check_number("epoch", epoch)
            if epoch >= self.T_0:
                if self.T_mult == 1:
                    self.T_cur = epoch % self.T_0
                else:
                    n = int(math.log(epoch / self.T_0 * (self.T_mult - 1) + 1, self.T_mult))
                    self.T_cur = epoch - self.T_0 * (self.T_mult**n - 1) / (self.T_mult - 1)
                    self.T_i = self.T_0 * self.T_mult**n
            else:
                self.T_i = self.T_0
                self.T_cur = epoch
        self.last_epoch = math.floor(epoch)
        self._set(self._closed_form(float(self.optimizer.lr)))


def _schedulers_of(owner: str, optimizer: Any, schedulers: Any) -> list[LRScheduler]:
    """``schedulers`` as a non-empty list of LRSchedulers of ``optimizer``; one TypeError or
    ValueError line naming the first that is not."""
    if isinstance(schedulers, LRScheduler) or not isinstance(schedulers, Iterable):
        raise TypeError(f"{owner} takes a list of schedulers, got {schedulers!r:.60}")
    out = list(schedulers)
    if not out:
        raise ValueError(f"{owner} expects at least one scheduler, got none")
    for i, sched in enumerate(out):
        if not isinstance(sched, LRScheduler):
            plateau = " (ReduceLROnPlateau steps with a metric: step it on its own)" \
                if isinstance(sched, ReduceLROnPlateau) else ""
            raise TypeError(f"{owner}: scheduler {i} is a {type(sched).__name__}, not a "
                            f"depthlab LRScheduler{plateau}")
        if optimizer is not None and sched.optimizer is not optimizer:
            raise ValueError(f"{owner}: scheduler {i} ({type(sched).__name__}) belongs to "
                             "another optimizer; all must share one")
    return out


class SequentialLR:
    """torch's ``SequentialLR``: ``schedulers[i]`` runs from ``milestones[i - 1]`` (epoch 0
    for the first) on; building it sets ``lr`` back to ``initial_lr`` and re-applies the
    first one's epoch 0 (the others step back one epoch, as torch's ``recursive_undo``), and at
    a milestone the next one restarts at its epoch 0 from its closed form (``LinearLR``
    warm-up then ``CosineAnnealingLR``: ``SequentialLR(opt, [warm, cos], milestones=[5])``)."""

    def __init__(self, optimizer: Optimizer, schedulers: Iterable[LRScheduler],
                 milestones: Iterable[int], last_epoch: int = -1) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"SequentialLR takes a depthlab optimizer (dl.optimizer(...)), got "
                            f"{type(optimizer).__name__}")
        self._schedulers = _schedulers_of("SequentialLR", optimizer, schedulers)
        if isinstance(milestones, str) or not isinstance(milestones, Iterable):
            raise TypeError(f"milestones must be a list of epochs, got {milestones!r:.60}")
        self._milestones = [_count("milestone", m, low=0) for m in milestones]
        if len(self._milestones) != len(self._schedulers) - 1:
            raise ValueError(f"SequentialLR takes one milestone fewer than schedulers: "
                             f"{len(self._schedulers)} schedulers, {len(self._milestones)} "
                             "milestones")
        self.optimizer = optimizer
        self.last_epoch = _count("last_epoch", last_epoch, low=-1) + 1
        optimizer.lr = optimizer.initial_lr  # set by the first scheduler built
        for sched in self._schedulers:
            sched.last_epoch -= 1
        first = self._schedulers[bisect.bisect_right(self._milestones, 0)]
        first.last_epoch += 1
        first._initial_step()

    def step(self) -> None:
        """Advance one epoch: the scheduler whose span holds it steps (at a milestone, the
        next one is set to its epoch 0)."""
        self.last_epoch += 1
        idx = bisect.bisect_right(self._milestones, self.last_epoch)
        sched = self._schedulers[idx]
        if idx > 0 and self._milestones[idx - 1] == self.last_epoch:
            sched.last_epoch = 0
            sched._set(sched._closed_form(float(self.optimizer.lr)))
        else:
            sched.step()

    def get_last_lr(self) -> list[float]:
        """``[lr]``, the learning rate the last step set."""
        return [float(self.optimizer.lr)]

    def state_dict(self) -> dict[str, Any]:
        """``last_epoch`` and each scheduler's :meth:`~LRScheduler.state_dict`."""
        return {"last_epoch": self.last_epoch,
                "schedulers": [s.state_dict() for s in self._schedulers]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s values."""
        self.last_epoch = _count("last_epoch", state["last_epoch"], low=0)
        for sched, sub in zip(self._schedulers, state["schedulers"], strict=True):
            sched.load_state_dict(sub)


class ChainedScheduler:
    """torch's ``ChainedScheduler``: :meth:`step` steps every scheduler in turn (their
    chained rules multiply), as calling each one's ``step()`` would."""

    def __init__(self, schedulers: Iterable[LRScheduler],
                 optimizer: Optimizer | None = None) -> None:
        self._schedulers = _schedulers_of("ChainedScheduler", optimizer, schedulers)
        self.optimizer = self._schedulers[0].optimizer if optimizer is None else optimizer
        _schedulers_of("ChainedScheduler", self.optimizer, self._schedulers)

    def step(self) -> None:
        """Step each scheduler once, in order."""
        for sched in self._schedulers:
            sched.step()

    def state_dict(self) -> dict[str, Any]:
        """Each scheduler's :meth:`~LRScheduler.state_dict`, in order."""
        return {"schedulers": [s.state_dict() for s in self._schedulers]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s values."""
        for sched, sub in zip(self._schedulers, state["schedulers"], strict=True):
            sched.load_state_dict(sub)

    def get_last_lr(self) -> list[float]:
        """``[lr]``, the learning rate the last step set."""
        return [float(self.optimizer.lr)]


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

    _STATE = ("mode", "factor", "patience", "threshold", "threshold_mode", "cooldown",
              "min_lr", "eps", "best", "num_bad_epochs", "cooldown_counter", "last_epoch")

    def state_dict(self) -> dict[str, Any]:
        """The settings and counters (``best``, ``num_bad_epochs``, ``cooldown_counter``,
        ``last_epoch``), as torch's; with ``opt.state_dict()`` a run resumes."""
        return {k: getattr(self, k) for k in self._STATE}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s values (checked by the constructor's rules first)."""
        missing = [k for k in self._STATE if k not in state] if isinstance(state, dict) \
            else list(self._STATE)
        if missing:
            raise ValueError(f"ReduceLROnPlateau.load_state_dict: missing {', '.join(missing)}; "
                             "expected the dict of a ReduceLROnPlateau's state_dict()")
        checked = ReduceLROnPlateau(self.optimizer, **{k: state[k] for k in self._STATE[:8]})
        best = state["best"]
        if isinstance(best, bool) or not isinstance(best, numbers.Real):
            raise TypeError(f"ReduceLROnPlateau state best={best!r:.60}; expected a number")
        for k in self._STATE[:8]:  # the settings as the constructor read them
            setattr(self, k, getattr(checked, k))
        self.best = float(best)
        self.num_bad_epochs = _count("num_bad_epochs", state["num_bad_epochs"], low=0)
        self.cooldown_counter = _count("cooldown_counter", state["cooldown_counter"], low=0)
        self.last_epoch = _count("last_epoch", state["last_epoch"], low=0)
