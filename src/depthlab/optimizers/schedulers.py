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
* ``OneCycleLR(max_lr, total_steps)``: from ``max_lr / div_factor`` up to ``max_lr`` over
  ``pct_start`` of the steps, then down to ``max_lr / div_factor / final_div_factor`` (cosine
  or linear), the momentum the other way; stepped per batch, refused past ``total_steps``;
* ``CyclicLR(base_lr, max_lr, step_size_up)``: triangles between ``base_lr`` and ``max_lr``
  (``triangular2``: halved each cycle; ``exp_range``: times ``gamma^e``), the momentum the
  other way;
* ``ReduceLROnPlateau(mode, factor, patience, ...)``: ``lr = max(lr * factor, min_lr)`` after
  more than ``patience`` epochs whose metric (``step(metric)``) did not beat the best.

Parameter groups (``optimizer.groups``): each rule runs once per group, from that group's own
``initial_lr`` (``base_lrs``), and ``get_last_lr()`` lists one lr per group, as torch's;
``LambdaLR``/``MultiplicativeLR`` take one function or one per group, and ``OneCycleLR``'s,
``CyclicLR``'s and ``ReduceLROnPlateau``'s lrs and momenta one number or one per group.
"""

from __future__ import annotations

import bisect
import math
import numbers
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from .base import Optimizer, check_flag, check_number

__all__ = ["ChainedScheduler", "ConstantLR", "CosineAnnealingLR", "CosineAnnealingWarmRestarts",
           "CyclicLR", "ExponentialLR", "LRScheduler", "OneCycleLR",
           "LambdaLR", "LinearLR", "MultiStepLR", "MultiplicativeLR", "PolynomialLR",
           "ReduceLROnPlateau", "SequentialLR", "StepLR"]


def _count(name: str, value: Any, low: int = 1) -> int:
    """An integer >= ``low`` (bools refused): TypeError / ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= {low}, got {value!r:.60}")
    if value < low:
        raise ValueError(f"invalid {name} value: {value!r}; expected an integer >= {low}")
    return int(value)


class _PerGroup:
    """A scheduler setting with one value per parameter group, kept in the list named with an
    ``s`` (torch's ``base_lrs``, ``max_lrs``, ``lr_lambdas``, ...): read, it is the value of
    the group the scheduler is working on (``_group``)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.many = name + "s"

    def __get__(self, obj: Any, objtype: type | None = None) -> Any:
        if obj is None:
            return self
        return getattr(obj, self.many)[obj._group]

    def __set__(self, obj: Any, value: Any) -> None:
        getattr(obj, self.many)[obj._group] = value


def _per_group(name: str, value: Any, n: int, check: Callable[[str, Any], Any]) -> list[Any]:
    """One value per parameter group: a list or tuple of ``n`` (torch's), or one value for
    all; each passed through ``check(name, value)``."""
    if isinstance(value, list | tuple):
        if len(value) != n:
            raise ValueError(f"expected {n} values for {name}, one per parameter group, got "
                             f"{len(value)}")
        return [check(name, v) for v in value]
    return [check(name, value)] * n


class LRScheduler:
    """Base class: sets each parameter group's ``lr`` to :meth:`_next_lr` at epoch 0 (when
    built) and after each :meth:`step`; ``last_epoch`` counts the steps, ``base_lr`` is the
    group's ``initial_lr`` (its ``lr`` when its first scheduler was built, as torch's;
    ``base_lrs`` holds one per group). The rule runs once per group, with ``_group`` its
    index, so each group follows the schedule from its own ``initial_lr``."""

    base_lr = _PerGroup()
    _group = 0  # the parameter group the rule is working on

    def __init__(self, optimizer: Optimizer, last_epoch: int = -1) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(self).__name__} takes a depthlab optimizer "
                            f"(dl.optimizer(...)), got {type(optimizer).__name__}")
        last_epoch = _count("last_epoch", last_epoch, low=-1)
        self.optimizer = optimizer
        for i, group in enumerate(optimizer.groups):
            if getattr(group, "initial_lr", None) is None:  # torch's group["initial_lr"]
                if last_epoch != -1:
                    raise ValueError(f"last_epoch={last_epoch} resumes a schedule, which starts "
                                     "from the optimizer's initial_lr (its lr before any "
                                     f"scheduler, torch's param_groups[{i}]['initial_lr']): set "
                                     f"param_groups[{i}]['initial_lr'] first")
                group.initial_lr = float(group.lr)
        self.base_lrs = [float(g.initial_lr) for g in optimizer.groups]
        self.last_epoch = last_epoch + 1  # torch's _initial_step: one step from last_epoch
        self._initial_step()

    def _initial_step(self) -> None:
        """Set epoch 0's lr (torch's ``_initial_step``: the rules that leave the lr alone when
        built read ``_initial``)."""
        self._initial = True
        try:
            self._each(self._next_lr)
        finally:
            self._initial = False

    def _each(self, rule: Callable[[float], float]) -> None:
        """Set each group's ``lr`` to ``rule(its lr)``, the rule reading that group's settings
        (``_group``); every new lr is computed before any is set (checked by the optimizer:
        a finite number >= 0)."""
        groups = _groups_of(self, len(self.base_lrs))
        new = []
        try:
            for i, group in enumerate(groups):
                self._group = i
                new.append(rule(float(group.lr)))
        finally:
            self._group = 0
        for group, lr in zip(groups, new):
            group.lr = lr

    def _next_lr(self, lr: float) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def _closed_form(self, lr: float) -> float:
        """The lr at ``last_epoch`` from ``base_lr`` (torch's ``_get_closed_form_lr``, which
        :class:`SequentialLR` reads at a milestone); the chained rule where torch has none."""
        return self._next_lr(lr)

    def step(self, epoch: int | None = None) -> None:
        """Advance one epoch (``last_epoch += 1``) and set the optimizer's ``lr`` (call it after
        ``opt.step()``). ``step(epoch)`` (torch's deprecated form, an integer >= 0) goes to
        ``last_epoch = epoch`` and sets the lr of that epoch from ``base_lr`` by the closed
        form (torch's ``_get_closed_form_lr``; its ``get_lr`` where it has none)."""
        if epoch is None:
            self.last_epoch += 1
            self._each(self._next_lr)
            return
        self.last_epoch = _count("epoch", epoch, low=0)
        self._each(self._closed_form)

    def get_last_lr(self) -> list[float]:
        """The learning rate the last step set, one per parameter group (torch's)."""
        return _lrs(self.optimizer)

    def state_dict(self) -> dict[str, Any]:
        """``base_lrs`` (``base_lr``: the first group's) and ``last_epoch`` (with
        ``opt.state_dict()``, a run resumes)."""
        return {"base_lr": self.base_lrs[0], "base_lrs": list(self.base_lrs),
                "last_epoch": self.last_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s values (the optimizer's ``lr`` comes with its own)."""
        n = len(self.optimizer.groups)
        base = _per_group("base_lr", state.get("base_lrs", state["base_lr"]), n, check_number)
        # -1: a scheduler of a SequentialLR that has not started yet (torch's undo)
        self.last_epoch = _count("last_epoch", state["last_epoch"], low=-1)
        self.base_lrs = base

    def __repr__(self) -> str:
        lr = _lrs(self.optimizer)
        return (f"{type(self).__name__}(last_epoch={self.last_epoch}, "
                f"lr={lr[0] if len(lr) == 1 else lr!r})")


def _groups_of(owner: Any, n: int) -> list[Optimizer]:
    """``owner.optimizer.groups``, refused in one line when they are not the ``n`` groups the
    scheduler was built for (a group added later has no schedule: torch skips it in some rules
    and scales it in others)."""
    groups = owner.optimizer.groups
    if len(groups) != n:
        raise ValueError(f"{type(owner).__name__} was built for {n} parameter group(s) and "
                         f"the optimizer now has {len(groups)} (add_param_group after the "
                         "scheduler): build the scheduler again")
    return groups


def _lrs(optimizer: Optimizer) -> list[float]:
    """Each parameter group's ``lr``."""
    return [float(g.lr) for g in optimizer.groups]


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
        # torch: "expected ... > 0 and <= 1"
        self.start_factor = check_number("start_factor", start_factor, high=1.0,
                                         low_inclusive=False)
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


def _function(name: str, value: Any) -> Callable[[int], float]:
    """``value`` if callable; TypeError otherwise."""
    if not callable(value):
        raise TypeError(f"{name} must be a function of the epoch, got {value!r:.60}")
    return value


class _EpochFunction(LRScheduler):
    """A schedule by a user's function of the epoch, ``lr_lambda`` (checked callable; a list
    of one per parameter group, as torch's ``lr_lambdas``)."""

    lr_lambda = _PerGroup()

    def __init__(self, optimizer: Optimizer, lr_lambda: Callable[[int], float],
                 last_epoch: int = -1) -> None:
        n = len(optimizer.groups) if isinstance(optimizer, Optimizer) else 1
        if isinstance(lr_lambda, list | tuple) and len(lr_lambda) != n:
            raise ValueError(f"Expected {n} lr_lambdas, but got {len(lr_lambda)}")
        self.lr_lambdas = _per_group("lr_lambda", lr_lambda, n, _function)
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
        # > 0: torch divides by it at total_iters (ZeroDivisionError)
        self.factor = check_number("factor", factor, high=1.0, low_inclusive=False)
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
        self._each(self._closed_form)


def _numbers(name: str, value: Any, optimizer: Any) -> list[float]:
    """Numbers >= 0, one per parameter group of ``optimizer`` (a list of as many, or one for
    all), as torch's ``max_lr``, ``base_lr``, ``base_momentum``, ..."""
    n = len(optimizer.groups) if isinstance(optimizer, Optimizer) else 1
    return _per_group(name, value, n, check_number)


def _momentum_key(owner: str, optimizer: Optimizer) -> str:
    """The hyperparameter a ``cycle_momentum`` schedule sets: Adam's (AdamW's, NAdam's)
    ``betas[0]``, or SGD's (RMSprop's) ``momentum``; a ValueError for optimizers with neither
    (torch's)."""
    names = optimizer.hyperparameter_names()
    for key in ("betas", "momentum"):
        if key in names:
            return key
    raise ValueError(f"{owner}: optimizer must support momentum or beta1 with `cycle_momentum` "
                     f"option enabled; {optimizer.name} has neither (cycle_momentum=False)")


class _MomentumCycle(LRScheduler):
    """A schedule that also sets the momentum (``cycle_momentum``): ``betas[0]`` or
    ``momentum`` of the optimizer (torch's ``use_beta1``)."""

    _momentum: str | None = None
    base_momentum = _PerGroup()
    max_momentum = _PerGroup()

    def _set_momentum(self, m: float) -> None:
        """Set the momentum of the group the rule is working on (``_group``)."""
        opt = self.optimizer.groups[self._group]
        if self._momentum == "betas":
            opt.betas = (m, opt.betas[1])
        elif self._momentum == "momentum":
            opt.momentum = m

    def _start_momentum(self) -> None:
        """Each group's momentum at its ``max_momentum``, where a cycle starts (torch's)."""
        for i, m in enumerate(self.max_momentums):
            self._group = i
            self._set_momentum(m)
        self._group = 0

    def get_last_momentum(self) -> list[float]:
        """The momentum (``betas[0]`` for Adam's kind) the last step set, one per parameter
        group; ``[]`` without ``cycle_momentum``."""
        if self._momentum is None:
            return []
        values = [getattr(g, self._momentum) for g in self.optimizer.groups]
        return [float(v[0] if self._momentum == "betas" else v) for v in values]


class OneCycleLR(_MomentumCycle):
    """torch's ``OneCycleLR`` (Smith & Topin 2018), stepped once per batch for ``total_steps``
    (or ``epochs * steps_per_epoch``) steps. The lr rises from ``initial_lr = max_lr /
    div_factor`` to ``max_lr`` over the first ``pct_start * total_steps - 1`` steps, then falls
    to ``min_lr = initial_lr / final_div_factor`` at step ``total_steps - 1``
    (``three_phase``: back down to ``initial_lr`` by step ``2 pct_start total_steps - 2``,
    then to ``min_lr``). Within a phase from step ``a`` to ``b``, with ``p = (e - a) / (b - a)``:
    ``anneal_strategy="cos"``: ``lr = end + (start - end) (1 + cos(pi p)) / 2``; "linear":
    ``lr = start + (end - start) p``. ``cycle_momentum``: the momentum (SGD's, RMSprop's
    ``momentum``; Adam's ``betas[0]``) goes the other way, from ``max_momentum`` to
    ``base_momentum`` and back. A step past ``total_steps`` is a ValueError, as torch's; the
    lr of the step at ``total_steps`` (past the last phase's end), negative in torch's linear
    annealing, is 0. ``max_lr``, ``base_momentum`` and ``max_momentum`` take one value per
    parameter group (a list) or one for all, as torch's."""

    max_lr = _PerGroup()
    initial_lr = _PerGroup()
    min_lr = _PerGroup()

    def __init__(self, optimizer: Optimizer, max_lr: float, total_steps: int | None = None,
                 epochs: int | None = None, steps_per_epoch: int | None = None,
                 pct_start: float = 0.3, anneal_strategy: str = "cos",
                 cycle_momentum: bool = True, base_momentum: float = 0.85,
                 max_momentum: float = 0.95, div_factor: float = 25.0,
                 final_div_factor: float = 1e4, three_phase: bool = False,
                 last_epoch: int = -1) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"OneCycleLR takes a depthlab optimizer (dl.optimizer(...)), got "
                            f"{type(optimizer).__name__}")
        if total_steps is not None:
            self.total_steps = _count("total_steps", total_steps)
        elif epochs is not None and steps_per_epoch is not None:
            self.total_steps = (_count("epochs", epochs)
                                * _count("steps_per_epoch", steps_per_epoch))
        else:
            raise ValueError("OneCycleLR: you must define either total_steps OR (epochs AND "
                             "steps_per_epoch)")
        self.pct_start = check_number("pct_start", pct_start, high=1.0)
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(f"anneal_strategy={anneal_strategy!r} is not accepted; accepted: "
                             "'cos', 'linear'")
        self.anneal_strategy = anneal_strategy
        self.max_lrs = _numbers("max_lr", max_lr, optimizer)
        # > 0: the lr is divided by them
        self.div_factor = check_number("div_factor", div_factor, low_inclusive=False)
        self.final_div_factor = check_number("final_div_factor", final_div_factor,
                                             low_inclusive=False)
        self.initial_lrs = [hi / self.div_factor for hi in self.max_lrs]
        self.min_lrs = [lo / self.final_div_factor for lo in self.initial_lrs]
        self.cycle_momentum = check_flag("cycle_momentum", cycle_momentum)
        self.three_phase = check_flag("three_phase", three_phase)
        self.base_momentums = _numbers("base_momentum", base_momentum, optimizer)
        self.max_momentums = _numbers("max_momentum", max_momentum, optimizer)
        if self.cycle_momentum:
            self._momentum = _momentum_key("OneCycleLR", optimizer)
        self.optimizer = optimizer
        for i, group in enumerate(optimizer.groups):
            if last_epoch == -1 or getattr(group, "initial_lr", None) is None:
                group.initial_lr = self.initial_lrs[i]  # torch's group["initial_lr"]
            for key in self._group_keys():  # torch's group["max_lr"], ... (read each step)
                if last_epoch == -1 or key not in group.user_keys:
                    group.set_user_key(key, getattr(self, key + "s")[i])
        if self.cycle_momentum and last_epoch == -1:
            self._start_momentum()
        super().__init__(optimizer, last_epoch)

    def _group_keys(self) -> tuple[str, ...]:
        """The keys torch's OneCycleLR writes into each parameter group and reads at each
        step: ``max_lr``, ``min_lr`` and, with ``cycle_momentum``, ``max_momentum`` and
        ``base_momentum`` (``opt.param_groups[0]["max_lr"]`` reads and sets them)."""
        return (("max_lr", "min_lr", "max_momentum", "base_momentum") if self.cycle_momentum
                else ("max_lr", "min_lr"))

    def _phases(self) -> list[tuple[float, float, float, float, float]]:
        """``(end step, start lr, end lr, start momentum, end momentum)`` of each phase
        (torch's) for the group the rule is working on, from its ``initial_lr`` and its
        ``max_lr``, ``min_lr``, ``base_momentum``, ``max_momentum`` keys, read at each step as
        torch reads them (a value set on ``param_groups`` between steps is taken)."""
        i = self._group
        own = self.optimizer.groups[i].user_keys

        def read(key: str) -> float:
            value = own.get(key, getattr(self, key + "s")[i])
            return check_number(f"param_groups[{i}][{key!r}]", value)

        lo, hi, low = self.initial_lrs[i], read("max_lr"), read("min_lr")
        mb, mm = ((read("base_momentum"), read("max_momentum")) if self.cycle_momentum
                  else (self.base_momentums[i], self.max_momentums[i]))
        t = self.total_steps
        first = float(self.pct_start * t) - 1
        if self.three_phase:
            return [(first, lo, hi, mm, mb), (float(2 * self.pct_start * t) - 2, hi, lo, mb, mm),
                    (t - 1, lo, low, mm, mm)]
        return [(first, lo, hi, mm, mb), (t - 1, hi, low, mb, mm)]

    def _anneal(self, start: float, end: float, pct: float) -> float:
        if self.anneal_strategy == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def _next_lr(self, lr: float) -> float:
        step = self.last_epoch
        if step > self.total_steps:
            raise ValueError(f"OneCycleLR: tried to step {step} times; the specified number of "
                             f"total steps is {self.total_steps}")
        start = 0.0
        phases = self._phases()
        for i, (end, lr0, lr1, m0, m1) in enumerate(phases):
            if step <= end or i == len(phases) - 1:
                if end == start:
                    raise ValueError(f"OneCycleLR: phase {i + 1} has no steps (pct_start="
                                     f"{self.pct_start} of total_steps={self.total_steps}); "
                                     "expected a longer schedule or another pct_start")
                pct = (step - start) / (end - start)
                if self.cycle_momentum:
                    self._set_momentum(self._anneal(m0, m1, pct))
                # the last allowed step (e = total_steps) is past the end: linear annealing
                # goes below min_lr there, below 0 (torch's lr -2.4e-3 after max_lr 0.5 over
                # 300 steps), which an optimizer refuses: 0 then
                return max(self._anneal(lr0, lr1, pct), 0.0)
            start = end
        raise AssertionError("unreachable")  # pragma: no cover


class CyclicLR(_MomentumCycle):
    """torch's ``CyclicLR`` (Smith 2017), stepped once per batch. With ``c = floor(1 + e /
    (up + down))`` the cycle and ``x = 1 + e / (up + down) - c`` the position in it, the
    height ``h = x / r`` rising (``x <= r = up / (up + down)``), ``(x - 1) / (r - 1)``
    falling: ``lr = base_lr + (max_lr - base_lr) h f``, ``f = scale_fn(c)`` (``scale_mode``
    "cycle") or ``scale_fn(e)`` ("iterations"). ``mode``: "triangular" ``f = 1``;
    "triangular2" ``f = 1 / 2^(c - 1)``; "exp_range" ``f = gamma^e``; a ``scale_fn`` replaces
    them. ``cycle_momentum`` (default True): ``momentum = max_momentum - (max_momentum -
    base_momentum) h f`` (SGD's, RMSprop's ``momentum``; Adam's ``betas[0]``). ``base_lr``,
    ``max_lr``, ``base_momentum`` and ``max_momentum`` take one value per parameter group (a
    list) or one for all, as torch's."""

    base_lr_value = _PerGroup()
    max_lr = _PerGroup()

    def __init__(self, optimizer: Optimizer, base_lr: float, max_lr: float,
                 step_size_up: int = 2000, step_size_down: int | None = None,
                 mode: str = "triangular", gamma: float = 1.0,
                 scale_fn: Callable[[float], float] | None = None, scale_mode: str = "cycle",
                 cycle_momentum: bool = True, base_momentum: float = 0.8,
                 max_momentum: float = 0.9, last_epoch: int = -1) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"CyclicLR takes a depthlab optimizer (dl.optimizer(...)), got "
                            f"{type(optimizer).__name__}")
        self.base_lr_values = _numbers("base_lr", base_lr, optimizer)
        self.max_lrs = _numbers("max_lr", max_lr, optimizer)
        # torch takes float(...) of them; a cycle of 0 steps up divides by 0
        up = check_number("step_size_up", step_size_up, low_inclusive=False)
        down = up if step_size_down is None else check_number("step_size_down", step_size_down)
        self.total_size = up + down
        self.step_ratio = up / self.total_size
        if scale_fn is None and mode not in ("triangular", "triangular2", "exp_range"):
            raise ValueError(f"mode={mode!r} is not accepted; accepted: 'triangular', "
                             "'triangular2', 'exp_range' (or a scale_fn)")
        if scale_fn is not None and not callable(scale_fn):
            raise TypeError(f"scale_fn must be a function of the cycle or iteration, got "
                            f"{scale_fn!r:.60}")
        if scale_mode not in ("cycle", "iterations"):
            raise ValueError(f"scale_mode={scale_mode!r} is not accepted; accepted: 'cycle', "
                             "'iterations'")
        self.mode, self.gamma = mode, check_number("gamma", gamma)
        self.scale_fn_custom = scale_fn
        self.scale_mode = (scale_mode if scale_fn is not None else
                           "iterations" if mode == "exp_range" else "cycle")
        self.cycle_momentum = check_flag("cycle_momentum", cycle_momentum)
        self.base_momentums = _numbers("base_momentum", base_momentum, optimizer)
        self.max_momentums = _numbers("max_momentum", max_momentum, optimizer)
        if self.cycle_momentum:
            self._momentum = _momentum_key("CyclicLR", optimizer)
        if last_epoch == -1:
            self.optimizer = optimizer
            for group, lr in zip(optimizer.groups, self.base_lr_values):
                group.lr = lr
            if self.cycle_momentum:
                self._start_momentum()
                for group, mb, mm in zip(optimizer.groups, self.base_momentums,
                                         self.max_momentums):  # torch's group keys
                    group.set_user_key("base_momentum", mb)
                    group.set_user_key("max_momentum", mm)
        super().__init__(optimizer, last_epoch)

    def scale_fn(self, x: float) -> float:
        """The amplitude factor at cycle (or iteration) ``x``: ``mode``'s, or ``scale_fn``'s."""
        if self.scale_fn_custom is not None:
            return self.scale_fn_custom(x)
        if self.mode == "triangular":
            return 1.0
        if self.mode == "triangular2":
            return 1 / (2.0 ** (x - 1))
        return self.gamma ** x

    def _next_lr(self, lr: float) -> float:
        e = self.last_epoch
        cycle = math.floor(1 + e / self.total_size)
        x = 1.0 + e / self.total_size - cycle
        if x <= self.step_ratio:
            scale = x / self.step_ratio
        else:
            scale = (x - 1) / (self.step_ratio - 1)
        f = self.scale_fn(cycle if self.scale_mode == "cycle" else e)
        if self.cycle_momentum:
            height = (self.max_momentum - self.base_momentum) * scale
            self._set_momentum(self.max_momentum - height * f)
        return self.base_lr_value + (self.max_lr - self.base_lr_value) * scale * f


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
        for group in optimizer.groups:
            group.lr = group.initial_lr  # set by the first scheduler built
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
            sched._each(sched._closed_form)
        else:
            sched.step()

    def get_last_lr(self) -> list[float]:
        """The learning rate the last step set, one per parameter group."""
        return _lrs(self.optimizer)

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
        """The learning rate the last step set, one per parameter group."""
        return _lrs(self.optimizer)


class ReduceLROnPlateau:
    """torch's ``ReduceLROnPlateau``: :meth:`step` takes the epoch's metric; after more than
    ``patience`` epochs without improving on the best (``mode="min"``: below ``best (1 -
    threshold)`` for ``threshold_mode="rel"``, ``best - threshold`` for "abs"; "max" mirrored),
    ``lr = max(lr * factor, min_lr)`` (only when that lowers it by more than ``eps``), then
    ``cooldown`` epochs in which bad epochs are not counted. Each parameter group is lowered
    to its own ``min_lr`` (one number, or a list of one per group: ``min_lrs``)."""

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
        self.min_lrs = _numbers("min_lr", min_lr, optimizer)
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
            for group, min_lr in zip(_groups_of(self, len(self.min_lrs)), self.min_lrs):
                old = float(group.lr)
                new = max(old * self.factor, min_lr)
                if old - new > self.eps:
                    group.lr = new
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0

    def get_last_lr(self) -> list[float]:
        """The optimizer's learning rate now, one per parameter group."""
        return _lrs(self.optimizer)

    @property
    def min_lr(self) -> float | list[float]:
        """``min_lr`` as given: one number, or one per parameter group."""
        lows = self.min_lrs
        return lows[0] if len(set(lows)) == 1 else list(lows)

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
            k = "min_lrs" if k == "min_lr" else k
            setattr(self, k, getattr(checked, k))
        self.best = float(best)
        self.num_bad_epochs = _count("num_bad_epochs", state["num_bad_epochs"], low=0)
        self.cooldown_counter = _count("cooldown_counter", state["cooldown_counter"], low=0)
        self.last_epoch = _count("last_epoch", state["last_epoch"], low=0)
