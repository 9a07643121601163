"""Early stopping: end training when a monitored epoch metric stops improving.

An epoch *improves* on the best value so far when, for a metric to minimise (a loss),

    value < best - min_delta

(for a metric to maximise, an accuracy: ``value > best + min_delta``). After ``patience``
epochs in a row without an improvement the run ends with that epoch (no further update). A
non-finite value never improves. With ``restore_best=True`` the network ends with the
parameters, and the batch norms' running statistics, of its best epoch (the optimizer's state
is not rewound).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from ..spec import TrainSpec, check_field
from .trainer import Callback

if TYPE_CHECKING:
    from .history import History
    from .trainer import Trainer

__all__ = ["EarlyStopping"]

_BN_STATE = ("running_mean", "running_var", "num_batches", "population_mean", "population_var")


class EarlyStopping(Callback):
    """Stop a :class:`~depthlab.training.Trainer` when ``monitor`` has not improved by more
    than ``min_delta`` for ``patience`` epochs.

    ``monitor``: one of ``val_loss``, ``val_acc`` (these need ``x_val, y_val``),
    ``train_loss``, ``train_acc`` (these need ``eval_train=True``). ``mode``: ``"min"``,
    ``"max"`` or ``"auto"`` (min for a loss, max for an accuracy). After ``fit``:
    :attr:`best` (the best value), :attr:`best_epoch`, :attr:`best_metrics` (that epoch's
    row), :attr:`stopped_epoch` (the epoch that ended the run, None when it ran its whole
    budget) and :attr:`restored` (whether the best epoch's parameters were put back)."""

    ends_run = True  # stops the run when it stops improving (Callback.ends_run)

    def __init__(self, monitor: str = "val_loss", *, patience: int = 5, min_delta: float = 0.0,
                 mode: str = "auto", restore_best: bool = True) -> None:
        # the [train] section's rules, one per setting (dl.fit(patience=, min_delta=) and a
        # config read them so): "VAL_LOSS" is val_loss, a wrong type a ConfigTypeError (a
        # TypeError and a ValueError), a value out of range a ConfigError (a ValueError)
        monitor = check_field(TrainSpec, "monitor", monitor)
        min_delta = check_field(TrainSpec, "min_delta", min_delta)
        patience = check_field(TrainSpec, "patience", patience)
        if patience is None:  # the [train] key may be left out; here it is the stopping rule
            raise ValueError("patience=None is not accepted; accepted: an integer >= 1 (epochs "
                             "without improvement before stopping)")
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"mode={mode!r} is not accepted; accepted: 'auto', 'min', 'max'")
        if not isinstance(restore_best, bool | np.bool_):
            raise TypeError(f"restore_best={restore_best!r} is not accepted; accepted: True "
                            "or False")
        self.monitor = monitor
        self.patience = int(patience)
        self.min_delta = float(min_delta)
        self.mode = ("min" if monitor.endswith("loss") else "max") if mode == "auto" else mode
        self.restore_best = bool(restore_best)
        self._reset()

    def _reset(self) -> None:
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.best_metrics: dict[str, float] | None = None
        self.stopped_epoch: int | None = None
        self.restored = False
        self.wait = 0
        self._snapshot: list[tuple[Any, str, Any]] | None = None
        self._updates = 0  # the history's update count when the snapshot was taken

    # -- the callback's hooks ---------------------------------------------------------------
    def on_train_begin(self, trainer: Trainer) -> None:
        """Refuse a monitor this run will not compute; start counting afresh."""
        if self.monitor.startswith("val_") and trainer._xv is None:
            raise ValueError(f"EarlyStopping(monitor={self.monitor!r}) needs validation data: "
                             "give fit x_val and y_val, or monitor 'train_loss'")
        if self.monitor.startswith("train_") and not trainer.eval_train:
            raise ValueError(f"EarlyStopping(monitor={self.monitor!r}) needs eval_train=True "
                             "(the training metrics are not computed)")
        y = trainer._yv if self.monitor.startswith("val_") else trainer._y
        if self.monitor.endswith("acc") and not reports_accuracy(trainer.loss, trainer.net, y):
            raise ValueError(_NO_ACCURACY.format(self.monitor))
        self._reset()

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, float]) -> None:
        """Record the epoch's monitored value; after ``patience`` epochs without an improvement
        above ``min_delta``, stop the trainer (and restore the best epoch's parameters)."""
        value = metrics.get(self.monitor)
        value = float("nan") if value is None else float(value)
        if self.monitor.endswith("acc") and math.isnan(value):
            raise ValueError(_NO_ACCURACY.format(self.monitor))
        if self._improved(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            self.best_metrics = dict(metrics)
            if self.restore_best:
                self._snapshot = _state(trainer.net)
                self._updates = len(trainer.history.step_loss)
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            trainer.stop()

    def on_train_end(self, trainer: Trainer, history: History) -> None:
        """Put the best epoch's state back when an update followed it (a later epoch, or the
        steps of an epoch cut short by a non-finite loss, which logs no epoch)."""
        if self.restore_best and self._snapshot is not None \
                and len(history.step_loss) != self._updates:
            for owner, attr, value in self._snapshot:
                _put(owner, attr, value)
            self.restored = True

    def _improved(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta


_NO_ACCURACY = ("EarlyStopping(monitor={!r}): this loss reports no accuracy on these targets "
                "(regression targets); monitor a loss instead")


def reports_accuracy(loss: Any, net: Any, y: Any) -> bool:
    """Whether ``loss`` reports an accuracy on targets ``y`` for ``net``'s outputs (asked of a
    zero prediction of the output width, a broadcast view: mse/huber on real targets give
    none, on one-hot rows they do). A loss whose accuracy cannot be asked this way is given
    the benefit of the doubt (checked per epoch)."""
    width = net.dense_layers()[-1].W.value.shape[1]
    zeros = np.broadcast_to(np.zeros((), net.dtype), (len(y), width))
    try:
        with np.errstate(all="ignore"):
            return loss.accuracy(zeros, y) is not None
    except Exception:  # noqa: BLE001 - a custom loss: judged on the first epoch's metrics
        return True


def _copy(value: Any) -> Any:
    return value.copy() if isinstance(value, np.ndarray) else value


def _state(net: Any) -> list[tuple[Any, str, Any]]:
    """Copies of every parameter's value and every batch norm's running statistics."""
    out = [(p, "value", p.value.copy()) for p in net.parameters()]
    for bn in net.batchnorms():
        out += [(bn, attr, _copy(getattr(bn, attr))) for attr in _BN_STATE]
    return out


def _put(owner: Any, attr: str, value: Any) -> None:
    """Restore in place where the array exists (the optimizer keeps referring to it)."""
    current = getattr(owner, attr)
    if isinstance(current, np.ndarray) and isinstance(value, np.ndarray) \
            and current.shape == value.shape:
        current[...] = value
    else:
        setattr(owner, attr, _copy(value))
