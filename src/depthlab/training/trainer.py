"""Gradient-descent training loop: full batch, stochastic (batch 1) or mini-batch."""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ..backend import Array
from ..backend import rng as make_rng
from ..layers import Standardize
from ..losses import get_loss
from ..memory import CHECK_FROM_BYTES, check_batch, check_fits
from ..network import Network
from ..optimizers import Optimizer, clip_grad_norm_, clip_grad_value_, get_optimizer
from ..optimizers.clip import check_clip
from ..regularizers import add_penalty_gradient, penalty
from ..spec import TrainSpec, check_field
from ..threads import blas_threads, check_threads
from ..validators import closest_name, torch_module_hint
from .calibration import PendingCalibration, deferrable
from .data_checks import check_xy, finite_features
from .history import DivergenceReport, History
from .interrupts import DeferredInterrupts


class Callback:
    """Hooks called by :class:`Trainer`. ``step`` counts optimizer updates from 1."""

    ends_run: bool = False
    """True for a callback that ends the run itself, whatever ``epochs``/``max_steps`` plan
    (early stopping; the playground's session, stopped by its user, which also trims the
    history): the run is open-ended, so its records are not sized by the planned length
    (:attr:`Trainer.planned_steps` is None and the history's memory is not checked)."""

    def on_train_begin(self, trainer: Trainer) -> None:
        """Before the first step of a :meth:`Trainer.fit` call."""

    def before_update(self, trainer: Trainer, step: int) -> None:
        """After the backward pass of ``step`` (every ``.grad`` filled), before the update."""

    def after_update(self, trainer: Trainer, step: int, loss: float) -> None:
        """After the optimizer's update of ``step``; ``loss`` is the step's batch loss."""

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, float]) -> None:
        """After each epoch, with its metrics (the row :meth:`History.epochs_frame` adds)."""

    def on_train_end(self, trainer: Trainer, history: History) -> None:
        """When the :meth:`Trainer.fit` call ends (finished, diverged or interrupted)."""


class Trainer:
    """Train ``net`` on ``(x, y)`` with one seed controlling the shuffling.

    ``batch_size``: an int (1 = stochastic), or ``None``/``"full"`` for full-batch gradient
    descent. The loss minimised is ``loss(net(x), y) + l1 sum|w| + l2 sum w^2``. A non-finite
    loss stops training and leaves a :class:`DivergenceReport` in the history.
    ``threads``: BLAS threads while training (default: chosen from the layer sizes, the batch
    and the idle cores, or the environment's setting; see :mod:`depthlab.threads`).
    Each call of :meth:`fit` trains ``epochs`` more epochs (at most ``max_steps`` more
    updates); step and epoch numbers continue and the history accumulates. As in a
    ``[train]`` section, ``epochs`` is 1 only when ``max_steps`` is not given either: with
    ``max_steps`` alone the training runs that many updates, over as many epochs as it takes.
    ``patience`` (with ``monitor`` and ``min_delta``) adds an
    :class:`~depthlab.training.EarlyStopping` (:attr:`early_stopping`) after ``callbacks``.
    With ``standardize=True`` the first call fits the input standardization; later calls keep
    it (the network was trained on that input scale).
    """

    def __init__(
        self,
        net: Network,
        *,
        loss: str = TrainSpec.loss,  # the defaults of a [train] section (depthlab.spec)
        optimizer: str | Optimizer = TrainSpec.optimizer,
        lr: float = TrainSpec.lr,
        batch_size: int | str | None = TrainSpec.batch_size,
        epochs: int | None = TrainSpec.epochs,
        max_steps: int | None = TrainSpec.max_steps,
        seed: int | None = TrainSpec.seed,
        l1: float = TrainSpec.l1,
        l2: float = TrainSpec.l2,
        standardize: bool = False,
        optimizer_kwargs: dict[str, Any] | None = None,
        callbacks: Sequence[Callback] = (),
        eval_every: int | None = TrainSpec.eval_every,
        patience: int | None = TrainSpec.patience,
        monitor: str = TrainSpec.monitor,
        min_delta: float = TrainSpec.min_delta,
        eval_train: bool = True,
        progress: bool | str = False,
        loss_kwargs: dict[str, Any] | None = None,
        threads: int | None = None,
        clip_grad_norm: float | None = None,
        clip_grad_value: float | None = None,
        **hyperparameters: Any,
    ) -> None:
        if not isinstance(net, Network):
            raise TypeError(
                f"net must be a depthlab Network (e.g. from dl.mlp), got {type(net).__name__}"
                + torch_module_hint(net, "train it in your own loop inside "
                                    "dlt.Watch(model) to record the same probes")
            )
        # the same rules as a [train] section (depthlab.spec.TrainSpec); None = full batch
        lr = check_field(TrainSpec, "lr", lr)
        batch_size = "full" if batch_size is None else check_field(
            TrainSpec, "batch_size", batch_size)
        if epochs is None and max_steps is None:  # the [train] rule (TrainSpec): fit(...,
            epochs = 1  # max_steps=500) on 64 rows stopped after one epoch of 2 steps
        epochs, max_steps, eval_every = (check_field(TrainSpec, k, v) for k, v in (
            ("epochs", epochs), ("max_steps", max_steps), ("eval_every", eval_every)))
        self.net = net
        if loss_kwargs is not None and not isinstance(loss_kwargs, dict):
            raise TypeError(f"loss_kwargs={loss_kwargs!r:.60} is not accepted; accepted: a dict, "
                            "e.g. {'label_smoothing': 0.1}")
        self.loss = get_loss(loss, **(loss_kwargs or {}))
        if getattr(self.loss, "reduction", "mean") == "none":
            raise ValueError(f"{self.loss!r}: training follows one number per batch; accepted: "
                             "reduction='mean' (the default) or 'sum'")
        _warn_squashed_twice(net, self.loss)
        opt_kwargs = _optimizer_kwargs(optimizer_kwargs, hyperparameters)
        if isinstance(optimizer, Optimizer):  # it keeps its own hyperparameters: fit's
            _check_unused(optimizer, lr, opt_kwargs)  # momentum=0.9 was silently not used
            _check_built_on(optimizer, net)
            self.optimizer = get_optimizer(optimizer, net.parameters())
        else:
            self.optimizer = get_optimizer(optimizer, net.parameters(), lr=lr, **opt_kwargs)
        self.batch_size = batch_size
        self.epochs = epochs
        self.max_steps = max_steps
        self.rng = make_rng(seed)
        # the [train] rules: finite numbers >= 0 (not "0.1", not True)
        self.l1, self.l2 = (float(check_field(TrainSpec, k, v)) for k, v in (("l1", l1),
                                                                            ("l2", l2)))
        for name, flag in (("standardize", standardize), ("eval_train", eval_train)):
            if not isinstance(flag, bool | np.bool_):
                raise TypeError(f"{name}={flag!r} is not accepted; accepted: True or False")
        self.standardize = bool(standardize)
        self.standardizer: Standardize | None = None
        self.callbacks = _check_callbacks(callbacks)
        self.early_stopping = None  # the [train] keys patience, monitor, min_delta
        # the [train] rules (monitor = "VAL_LOSS" was accepted by a config, refused by fit)
        monitor = check_field(TrainSpec, "monitor", monitor)
        min_delta = check_field(TrainSpec, "min_delta", min_delta)
        if patience is not None:
            from .early_stopping import EarlyStopping

            self.early_stopping = EarlyStopping(monitor, patience=check_field(
                TrainSpec, "patience", patience), min_delta=min_delta)
            self.callbacks.append(self.early_stopping)
        elif monitor != TrainSpec.monitor or min_delta != TrainSpec.min_delta:
            raise ValueError(f"monitor={monitor!r} and min_delta={min_delta!r} apply to early "
                             "stopping, which needs patience (an integer >= 1)")
        # torch.nn.utils' clipping of each step's gradient (penalty included), before the
        # update and the before_update callbacks (depthlab.optimizers.clip)
        self.clip_grad_norm = None if clip_grad_norm is None else check_clip(
            "clip_grad_norm", clip_grad_norm)
        self.clip_grad_value = None if clip_grad_value is None else check_clip(
            "clip_grad_value", clip_grad_value)
        self.eval_every = eval_every
        self.eval_train = eval_train
        self.progress = progress
        self.threads = None if threads is None else check_threads(threads, "threads")
        self.history = History()
        self.evals: list[dict[str, float]] = []
        self.step = 0
        self.epoch = 0
        self.planned_steps: int | None = None  # the updates the running fit call plans
        self._stop = False

    def stop(self) -> None:
        """End this ``fit`` call after the current step (from ``after_update``) or epoch (from
        ``on_epoch_end``), with no further update; the next ``fit`` call trains again."""
        self._stop = True

    # -- evaluation -------------------------------------------------------------------
    def evaluate(self, x: Array, y: Array, batch_size: int = 4096) -> dict[str, float]:
        """Inference-mode loss (data term) and accuracy on ``(x, y)`` (raw inputs:
        standardized here when the trainer standardizes)."""
        return self._evaluate(self.transform(x), y, batch_size)

    def transform(self, x: Array) -> Array:
        """``x`` as the network sees it in training: standardized with the training set's
        statistics (``standardizer``) when ``standardize=True``, else unchanged.
        ``(x - mean) / std`` is computed in float64, then cast to the network's dtype: a
        feature with a large offset keeps its spread (cast first, float32 rounds
        1e7 + N(0, 1) to integers); a result too large for the dtype is a ValueError."""
        s = self.standardizer
        if s is None:
            return x
        # a new array (x is kept), with the float64 statistics: a float32 mean of 1e8 + 3.7 is
        # 1e8 (the feature was centred at 3.7)
        return finite_features(s.standardize64(x), self.net.dtype, "standardized x")

    def _evaluate(self, x: Array, y: Array, batch_size: int = 4096) -> dict[str, float]:
        # an overflow in the forward pass is its result, not a NumPy warning: a hidden unit
        # past the dtype's range is +-inf (ReLU of -inf: 0), and outputs that overflow give a
        # loss of inf or NaN, which the metrics show (training's own evaluations run under
        # the loop's errstate; the final test evaluation printed "overflow encountered in
        # matmul" beside a run that finished with a finite test_loss)
        with np.errstate(over="ignore", invalid="ignore"):
            out = self.net.predict(x, batch_size)
            loss = self.loss.forward(out, y)
            acc = self.loss.accuracy(out, y)
        return {"loss": float(loss), "acc": float("nan") if acc is None else float(acc)}

    def prepare_inference(self) -> None:
        """Make inference-mode passes valid now: batch norms in ``population`` mode get the
        statistics of the whole training set under the current weights (one pass)."""
        if any(bn.inference == "population" for bn in self.net.batchnorms()):
            self.net.calibrate(self._x)
            self._drop_pending()  # replaced: every batch norm has new statistics

    def _prepare_metrics(self) -> None:
        """:meth:`prepare_inference` for the epoch's end: when the epoch computes no metric
        (``eval_train=False``, no validation set) the pass is deferred until a population
        statistic is read (:mod:`depthlab.training.calibration`; the same values), so a run
        that never reads them, or whose next epoch replaces them, skips it."""
        if self.eval_train or self._xv is not None or not any(
                bn.inference == "population" for bn in self.net.batchnorms()):
            self.prepare_inference()
        elif deferrable(self.net):
            reuse = self._drop_pending()
            self._pending = PendingCalibration(self.net, self._x, reuse)
        else:
            self.prepare_inference()

    def _drop_pending(self) -> PendingCalibration | None:
        """Forget a deferred calibration that a new one replaces (returned: its weight
        buffers are reused)."""
        pending, self._pending = getattr(self, "_pending", None), None
        if pending is not None:
            pending.release()
        return pending

    def _settle_pending(self) -> None:
        """Compute a deferred calibration now (the end of a ``fit`` call: the trainer lets
        go of the data)."""
        pending, self._pending = getattr(self, "_pending", None), None
        if pending is not None:
            pending.settle()

    def _metrics(self) -> dict[str, float]:
        self._prepare_metrics()
        m: dict[str, float] = {"epoch": self.epoch, "step": self.step}
        if self.eval_train:
            tr = self._evaluate(self._x, self._y)
            m.update(train_loss=tr["loss"], train_acc=tr["acc"])
        if self._xv is not None:
            va = self._evaluate(self._xv, self._yv)
            m.update(val_loss=va["loss"], val_acc=va["acc"])
        return m

    # -- the loop ------------------------------------------------------------------------
    def fit(self, x: ArrayLike, y: ArrayLike, x_val: ArrayLike | None = None,
            y_val: ArrayLike | None = None) -> History:
        """Train on ``x`` (``(n, n_inputs)``) and ``y`` (integer labels ``(n,)`` or targets
        ``(n, n_outputs)``), evaluating on ``x_val, y_val`` after each epoch when given;
        returns the :class:`History` (accumulated over calls). Bad data (shapes, NaN, empty,
        labels out of range) raise ValueError/TypeError before the first step."""
        fitting = self.standardize and self.standardizer is None
        step = self.step
        try:
            return self._fit(x, y, x_val, y_val)
        except BaseException:
            if fitting and self.step == step:  # refused before its first update: the input
                # scale is fitted by the first call that trains (a refused call's arrays,
                # perhaps the wrong ones, set it for every later call)
                self.standardizer = self.history.standardizer = None
            raise

    def _fit(self, x: ArrayLike, y: ArrayLike, x_val: ArrayLike | None,
             y_val: ArrayLike | None) -> History:
        net = self.net
        raw = np.float64 if self.standardize else net.dtype  # cast after standardizing
        if self.standardize:
            for part, what in ((x, "training"), (x_val, "validation")):
                _check_standardize_memory(part, net.dtype, what)
        x, y = check_xy(x, y, n_inputs=net.n_inputs, dtype=raw)
        if (x_val is None) != (y_val is None):
            raise ValueError("give both x_val and y_val, or neither; got only "
                             + ("x_val" if y_val is None else "y_val"))
        if x_val is not None:
            x_val, y_val = check_xy(
                x_val, y_val, n_inputs=net.n_inputs, dtype=raw, what="validation"
            )
        if self.standardize:  # the data are standardized; the caller's network is not changed
            if self.standardizer is None:  # a later call continues on the same input scale
                self.standardizer = Standardize.fit(x, net.dtype)
            x = self.transform(x)
            x_val = None if x_val is None else self.transform(x_val)
        self.history.standardizer = self.standardizer
        self._x, self._y, self._xv, self._yv = x, y, x_val, y_val
        self._check_targets(y, "training")  # a bad label fails now, not mid-epoch
        if y_val is not None:
            self._check_targets(y_val, "validation")
        n = x.shape[0]
        bs = n if self.batch_size in (None, "full") else min(int(self.batch_size), n)
        has_bn = bool(net.batchnorms())
        if has_bn and bs < 2:
            got = (f"batch_size={bs}" if n > 1 else
                   f"{n} training row (batch_size={self.batch_size!r})")
            raise ValueError(f"batch normalization needs batches of at least 2 rows; got {got}")
        check_batch(net, bs + 1 if has_bn and bs < n else bs,  # refused before allocating
                    f"training on batches of {bs} rows" if bs < n else "full-batch training")
        merge = has_bn and bs < n and n % bs == 1
        if merge:  # one row cannot be batch-normalized: it joins the batch before it
            warnings.warn(f"batch normalization: {n} rows in batches of {bs} leave 1 row for "
                          f"the last batch of each epoch; it is merged into the batch before "
                          f"it ({bs + 1} rows)", stacklevel=3)
        per_epoch = -(-n // bs) - merge  # integer ceilings: epochs of 10**400 stay exact
        total = self.max_steps if self.epochs is None else per_epoch * self.epochs
        if self.max_steps is not None:
            total = min(total, self.max_steps)
        # the updates planned, for callbacks to size their records (ProbeRecorder); None when
        # a callback ends the run itself (Callback.ends_run: early stopping, as a config's
        # train.patience, depthlab.experiments.runner.check_history; the playground)
        open_ended = any(getattr(cb, "ends_run", False) for cb in self.callbacks)
        self.planned_steps = None if open_ended else total
        if not open_ended:
            _check_history_memory(total, -(-total // per_epoch), self.eval_every)
        params = net.parameters()
        hist = self.history
        bar = _progress(total, self.progress)
        hist.interrupted = False
        self._stop = False  # a stop() asked for in an earlier call does not carry over
        try:
            for cb in self.callbacks:
                cb.on_train_begin(self)
            # the initializer a divergence's advice may credit: judged on the weights this
            # call starts from (a step that diverges has moved them)
            self._start_init = _matched_init(net)
            t0 = time.perf_counter()
            shapes = [p.value.shape for p in params if p.value.ndim == 2]
            self._first_epoch, self._first_step = self.epoch, self.step  # this call's budget
            with np.errstate(over="ignore", invalid="ignore"), blas_threads(  # depthlab.threads
                    self.threads, batch_rows=bs, weight_shapes=shapes), \
                    DeferredInterrupts() as self._interrupts:  # Ctrl-C: at a step's end
                self._loop(x, y, n, bs, has_bn, params, bar)
                # under the loop's BLAS threads, as the eager pass ran; after Ctrl-C or an
                # error it stays pending (computed when first read), so stopping is prompt
                self._settle_pending()
        except KeyboardInterrupt:  # the history says so (a notebook's History(..., finished)
            hist.interrupted = True  # after Ctrl-C was a claim the run never made)
            raise
        finally:  # also on Ctrl-C or an error: the bar ends its line before any message
            if bar is not None:
                bar.close()
        hist.seconds = time.perf_counter() - t0
        hist.evals = self.evals
        for cb in self.callbacks:
            cb.on_train_end(self, hist)
        return hist

    def _check_targets(self, y, what: str) -> None:
        """The loss's checks of ``y`` (label range, shape, finiteness) on all rows at once,
        against a zero prediction of the network's output width (a broadcast view: no
        allocation; built-in losses only, which never write into the prediction)."""
        if type(self.loss).__module__ != "depthlab.losses":
            return
        width = self.net.dense_layers()[-1].W.value.shape[1]
        chunk = 65536  # the loss's temporaries stay small whatever the data's size
        try:
            with np.errstate(all="ignore"):
                for start in range(0, len(y), chunk):
                    part = y[start:start + chunk]
                    zeros = np.broadcast_to(np.zeros((), self.net.dtype), (len(part), width))
                    self.loss.forward(zeros, part)
        except (ValueError, TypeError) as e:
            raise type(e)(f"{what} y: {e}") from None
        self.loss._cache = None  # nothing of the check is kept

    def _loop(self, x, y, n, bs, has_bn, params, bar) -> None:
        """Epochs until ``epochs`` or ``max_steps`` is reached or the loss diverges."""
        t0 = time.perf_counter()
        while True:
            self.epoch += 1
            stop = self._epoch(x, y, n, bs, has_bn, params, bar)
            if self.history.diverged:
                return
            self._end_epoch(t0, bar)
            if self._left_nonfinite(x, params):
                return
            if stop or (self.epochs is not None
                        and self.epoch - self._first_epoch >= self.epochs):
                return
            # a callback's on_epoch_end may end the run (trainer.max_steps = trainer.step, as
            # early stopping does): it ran one more update and logged a 1-step epoch
            if self._stop or (self.max_steps is not None
                              and self.step - self._first_step >= self.max_steps):
                return

    def _epoch(self, x, y, n, bs, has_bn, params, bar) -> bool:
        """One pass over the data in shuffled batches (with batch norm a last batch of one
        row is merged into the batch before it); True when training must stop (max_steps or
        divergence)."""
        order = self.rng.permutation(n) if bs < n else None
        for start in range(0, n, bs):
            if order is None:
                xb, yb = x, y
            else:
                if has_bn and n - start < 2:
                    continue  # this row was merged into the batch before
                end = n if has_bn and n - start - bs == 1 else start + bs
                idx = order[start:end]
                xb, yb = x[idx], y[idx]
            with self._interrupts.step():  # never half a step (training.interrupts)
                loss = self._step(xb, yb, params)
            if loss is None:
                return True
            self._after_step(loss, bar)
            if self._stop or (self.max_steps is not None
                              and self.step - self._first_step >= self.max_steps):
                return True
        return False

    def _step(self, xb, yb, params) -> float | None:
        """One update: forward, loss (+ penalty), backward, callbacks around the optimizer
        step. Returns the loss, or None after a non-finite loss (a DivergenceReport)."""
        net, loss_fn, hist = self.net, self.loss, self.history
        out = net.forward(xb, training=True)
        loss = loss_fn.forward(out, yb)
        if self.l1 or self.l2:
            loss += penalty(params, self.l1, self.l2)
        self.step += 1
        if not math.isfinite(loss):
            hist.divergence = DivergenceReport(
                step=self.step, epoch=self.epoch, loss=float(loss),
                layer=net.first_nonfinite(out),
                nonfinite_parameters=[p.name for p in params if not np.isfinite(p.value).all()],
                batchnorm=bool(net.batchnorms()),
                before_update=self.step - self._first_step == 1,
                matched_init=getattr(self, "_start_init", None),
                zero_eps=_zero_eps(self.optimizer),
            )
            return None
        net.backward(loss_fn.backward(), input_grad=False, copy=False)
        if self.l1 or self.l2:
            add_penalty_gradient(params, self.l1, self.l2)
        if self.clip_grad_norm is not None:
            clip_grad_norm_(params, self.clip_grad_norm)
        if self.clip_grad_value is not None:
            clip_grad_value_(params, self.clip_grad_value)
        for cb in self.callbacks:
            cb.before_update(self, self.step)
        self.optimizer.step()
        hist.step_loss.append(loss)
        for cb in self.callbacks:
            cb.after_update(self, self.step, loss)
        return loss

    def _after_step(self, loss: float, bar) -> None:
        """Progress bar and the validation evaluation every ``eval_every`` steps."""
        if bar is not None:
            bar.update(1)
            if self.step % 10 == 0:  # one set of fields: loss and the last epoch's val_acc
                self._postfix = {**getattr(self, "_postfix", {}), "loss": f"{loss:.4f}"}
                bar.set_postfix(self._postfix, refresh=False)
        if self.eval_every and self.step % self.eval_every == 0:
            self.prepare_inference()
            row: dict[str, float] = {"step": self.step, "epoch": self.epoch}
            if self._xv is not None:
                va = self._evaluate(self._xv, self._yv)
                row.update(val_loss=va["loss"], val_acc=va["acc"])
            self.evals.append(row)

    def _left_nonfinite(self, x, params) -> bool:
        """Whether the epoch's last update left non-finite parameters, or a training loss
        over the epoch's data that is not finite (``inf``/NaN), which no step's loss showed
        (each is computed before its update): then a :class:`DivergenceReport` at this step,
        so the run is ``diverged``, not ``finished`` with NaN metrics."""
        last = self.history.epochs[-1] if self.history.epochs else {}
        losses = [last["train_loss"]] if last.get("train_loss") is not None else []
        bad = [p.name for p in params if not np.isfinite(p.value).all()]
        if not bad and all(math.isfinite(v) for v in losses):
            return False
        out = self.net.forward(x[:256], training=False)  # where it turns non-finite
        layer = self.net.first_nonfinite(out)
        self.net.clear_cache()
        loss = next((v for v in losses if not math.isfinite(v)), float("nan"))
        self.history.divergence = DivergenceReport(
            step=self.step, epoch=self.epoch, loss=float(loss), layer=layer,
            nonfinite_parameters=bad, batchnorm=bool(self.net.batchnorms()),
            matched_init=getattr(self, "_start_init", None),
            zero_eps=_zero_eps(self.optimizer))
        return True

    def _end_epoch(self, t0: float, bar) -> None:
        """Epoch metrics (training and validation loss/accuracy) into the history."""
        metrics = self._metrics()
        metrics["seconds"] = time.perf_counter() - t0
        self.history.epochs.append(metrics)
        if bar is not None and metrics.get("val_acc") is not None:
            # a regression (no accuracy: NaN) shows its validation loss instead
            key = "val_loss" if math.isnan(metrics["val_acc"]) else "val_acc"
            self._postfix = {**getattr(self, "_postfix", {}), key: f"{metrics[key]:.4g}"
                             if key == "val_loss" else f"{metrics[key]:.4f}"}
            bar.set_postfix(self._postfix, refresh=True)
        for cb in self.callbacks:
            cb.on_epoch_end(self, self.epoch, metrics)


# Python objects the History keeps: a float in a list per update (24 + 8 bytes), a dict of
# about 7 floats per epoch (~400 bytes) and per evaluation row (~300 bytes)
STEP_RECORD_BYTES = 32
EPOCH_RECORD_BYTES = 400
EVAL_RECORD_BYTES = 300


def _zero_eps(optimizer: Any) -> str | None:
    """The optimizer's class name when it divides by ``sqrt(v) + eps`` with ``eps`` = 0
    (:attr:`DivergenceReport.zero_eps`), else None."""
    eps = getattr(optimizer, "eps", None)
    return type(optimizer).__name__ if isinstance(eps, (int, float)) and eps == 0 else None


def _check_history_memory(steps: int, epochs: int, eval_every: int | None) -> None:
    """Refuse (:class:`~depthlab.memory.MemoryRefusal`) before the first update a run whose
    History cannot fit: ``steps * 32 + epochs * 400 (+ steps // eval_every * 300)`` bytes
    (``epochs=10**12`` grew the per-step list until the process was killed)."""
    evals = steps // eval_every if eval_every else 0
    nbytes = steps * STEP_RECORD_BYTES + epochs * EPOCH_RECORD_BYTES + evals * EVAL_RECORD_BYTES
    if nbytes > CHECK_FROM_BYTES:
        check_fits(nbytes, f"the training history of {steps:,} updates and {epochs:,} epochs "
                   "(a loss per update, a row per epoch; fewer epochs or max_steps)")


_HOOKS = ("on_train_begin", "before_update", "after_update", "on_epoch_end", "on_train_end")


def _check_callbacks(callbacks: Any) -> list[Callback]:
    """``callbacks`` as a list, each with every :class:`Callback` hook, or a TypeError naming
    the bad value (a single callback not in a list, an object without the hooks)."""
    if isinstance(callbacks, str | bytes | dict) or not hasattr(callbacks, "__iter__"):
        raise TypeError(f"callbacks={callbacks!r:.60} is not accepted; accepted: a list of "
                        "Callback objects, e.g. [dl.ProbeRecorder(x_val, y_val)]")
    out = list(callbacks)
    for i, cb in enumerate(out):
        missing = [h for h in _HOOKS if not callable(getattr(cb, h, None))]
        if missing:
            raise TypeError(f"callbacks[{i}]={cb!r:.60} is not accepted: it has no method "
                            f"{missing[0]}(); accepted: instances of a subclass of "
                            "depthlab.training.Callback")
    return out


# A loss on logits and the output activation it applies itself (torch's CrossEntropyLoss after
# a Softmax, BCEWithLogitsLoss after a Sigmoid: a classic silent bug).
_LOGIT_LINKS = {"cross_entropy": "softmax", "binary_cross_entropy": "sigmoid"}


def _warn_squashed_twice(net: Network, loss: Any) -> None:
    """A warning when ``net`` ends in the very squashing its logit loss applies itself
    (``output_activation="softmax"`` with ``cross_entropy``, ``"sigmoid"`` with
    ``binary_cross_entropy``, alias ``BCEWithLogitsLoss``): the loss then saw probabilities as
    logits, silently (its minimum is no longer 0 and the gradients shrink as the output
    saturates). Also when ``bce_loss`` (torch's ``BCELoss``, on probabilities) follows
    anything but a sigmoid; ``nll_loss`` (``NLLLoss``) after a built-in layer, which never
    gives log-probabilities, is a ValueError naming ``cross_entropy``."""
    link = _LOGIT_LINKS.get(getattr(loss, "name", None))
    last = next(iter(reversed(list(net.leaves()))), None)
    from ..layers import Activation, AlphaDropout, BatchNorm, Dense, Dropout, Standardize

    built_in = (Activation, AlphaDropout, BatchNorm, Dense, Dropout, Standardize)

    if link is not None and isinstance(last, Activation) and last.fn.name == link:
        warnings.warn(f"loss {loss.name!r} takes logits and applies {link} itself, but the "
                      f"network already ends in {link} (output_activation={link!r}): its "
                      f"outputs are squashed twice; build the network without "
                      f"output_activation (or use loss='mse' on probabilities)", stacklevel=3)
    ends = last.fn.name if isinstance(last, Activation) else None
    name = getattr(loss, "name", None)
    if name == "bce_loss" and ends != "sigmoid":
        warnings.warn("loss 'bce_loss' (torch's BCELoss) takes probabilities, but the network "
                      f"does not end in sigmoid ({'ends in ' + ends if ends else 'logits'}): "
                      "use loss='binary_cross_entropy' (BCEWithLogitsLoss) on its logits",
                      stacklevel=3)
    elif name == "nll_loss" and isinstance(last, built_in):
        raise ValueError("loss 'nll_loss' (torch's NLLLoss) takes log-probabilities, which no "
                         f"depthlab layer ends in (this network: {type(last).__name__}; its "
                         "loss would fall without bound); use loss='cross_entropy' on the "
                         "logits (torch's CrossEntropyLoss = log-softmax + NLLLoss)")


def _model_options() -> set[str]:
    """The options of ``dl.mlp`` (the fields of :class:`depthlab.spec.ModelSpec`)."""
    import dataclasses

    from ..spec import ModelSpec

    return {f.name for f in dataclasses.fields(ModelSpec)}


def _optimizer_kwargs(kwargs: dict[str, Any] | None, direct: dict[str, Any]) -> dict[str, Any]:
    """``optimizer_kwargs`` with the optimizer hyperparameters given directly (``fit(...,
    momentum=0.9)``, as a ``[train]`` section may); any other unknown keyword is a TypeError
    listing the accepted ones."""
    import inspect

    from ..spec import EVERY, KEY_SYNONYMS, all_optimizer_hyperparameters, loss_arguments

    if kwargs is not None and not isinstance(kwargs, dict):
        raise TypeError(f"optimizer_kwargs={kwargs!r:.60} is not accepted; accepted: a dict, "
                        "e.g. {'momentum': 0.9}")
    out = dict(kwargs or {})
    if "lr" in out:  # was get_optimizer()'s 'got multiple values for keyword argument 'lr''
        raise TypeError(f"optimizer_kwargs['lr']={out['lr']!r} is not accepted; the learning "
                        f"rate is fit()/Trainer()'s own option: lr={out['lr']!r}")
    known = all_optimizer_hyperparameters()
    for key, value in direct.items():
        if key not in known:
            own = [k for k in inspect.signature(Trainer).parameters if k not in (
                "net", "hyperparameters")]
            synonym = KEY_SYNONYMS["train"].get(key.strip().lower().replace("-", "_"))
            # the data arguments of fit() / Trainer.fit() are candidates too: Keras'
            # validation_data=(xv, yv), scikit-learn's X_val= (val_data= hinted 'eval_train')
            data_args = ["x_val", "y_val", "validation_data"]
            close = synonym if synonym in own else closest_name(key, own + known + data_args)
            hint = f" (did you mean {close!r}?)" if close else ""
            if close in data_args:
                hint = (" (validation data are the data arguments x_val, y_val: "
                        "dl.fit(net, x, y, x_val, y_val) or Trainer(net, ...).fit(x, y, x_val, "
                        "y_val))")
            if key in _model_options():  # fit(..., dropout=0.2): the README's regularization
                hint = f" ({key} is a model option: dl.mlp(..., {key}=...))"  # row lists both
            elif key in loss_arguments():  # fit(..., delta=2.0) hinted "did you mean 'betas'?"
                taker = loss_arguments()[key]  # (EVERY for reduction: not "of 'mse'")
                owner = "every loss" if taker == EVERY else f"the loss {taker!r}"
                hint = (f" ({key} is an argument of {owner}: "
                        f"loss_kwargs={{{key!r}: {value!r}}})")
            raise TypeError(f"fit()/Trainer() got an unknown option {key!r}{hint}; accepted: "
                            f"{', '.join(own)} and the optimizer's hyperparameters "
                            f"({', '.join(known)})")
        if key in out and out[key] != value:
            raise ValueError(f"{key} is given twice with different values ({key}={value!r} and "
                             f"optimizer_kwargs[{key!r}]={out[key]!r})")
        out[key] = value
    return out


def _check_unused(optimizer: Optimizer, lr: float, kwargs: dict[str, Any]) -> None:
    """A TypeError naming a hyperparameter given to fit/Trainer beside an optimizer instance
    (which keeps its own): any in ``kwargs``, or an ``lr`` other than the default and the
    instance's."""
    kind = type(optimizer).__name__
    for key, value in kwargs.items():
        raise TypeError(f"{key}={value!r} is not used: optimizer is an instance of {kind}, which "
                        f"keeps its own hyperparameters; set it there (optimizer.{key} = "
                        f"{value!r}) or pass optimizer={optimizer.name!r}")
    if lr != TrainSpec.lr and lr != optimizer.lr:
        where = ("optimizer.param_groups[i]['lr']" if len(optimizer.param_groups) > 1
                 else "optimizer.lr")
        raise TypeError(f"lr={lr!r} is not used: optimizer is an instance of {kind} with lr="
                        f"{optimizer.lr!r}; set {where} = {lr!r} or pass "
                        f"optimizer={optimizer.name!r}")


def _check_built_on(optimizer: Optimizer, net: Network) -> None:
    """A ValueError when an optimizer instance given to fit/Trainer was not built on exactly
    ``net.parameters()`` (fit trains them all): one built on the last layer only, to freeze the
    others as torch users do, read "SGD instance was built on other parameters than the ones
    given", though fit's caller gave none. Names how many of the network's parameters it holds,
    the first one it lacks, and the two ways on."""
    mine = net.parameters()
    if len(optimizer.params) == len(mine) and (
            all(a is b for a, b in zip(optimizer.params, mine))
            # torch's groups (weights with weight decay, biases without) hold every parameter
            # in another order; the optimizer's state is keyed by the Parameter object
            or (len(optimizer.param_groups) > 1
                and {id(p) for p in optimizer.params} == {id(p) for p in mine})):
        return
    ids = {id(p) for p in optimizer.params}
    held = sum(id(p) in ids for p in mine)
    kind = type(optimizer).__name__
    ways = ("build it on net.parameters() (dl.optimizer(" + repr(optimizer.name)
            + ", net.parameters(), ...)), or, to train only some layers, step it in your own "
            "loop (net.forward, loss.backward, net.backward, opt.step())")
    if held == 0:
        raise ValueError(f"the {kind} optimizer given is built on none of this network's "
                         f"{len(mine)} parameters (another network's?); fit trains every "
                         f"parameter of the network it is given: {ways}")
    lacking = [p.name for p in mine if id(p) not in ids]
    extra = len(optimizer.params) - held
    why = [f"not on {lacking[0]}"] if lacking else []
    if extra:
        why.append(f"also on {extra} that are not the network's")
    if not why:
        why.append("in another order than net.parameters()")
    raise ValueError(
        f"the {kind} optimizer given is built on {held} of the network's {len(mine)} "
        f"parameters ({'; '.join(why)}); fit trains every parameter of the network: {ways}")


def _progress(total: int, progress: bool | str):
    """A bar (``True``/``"bar"``), plain status lines (``"lines"``, for logs) or None; see
    :mod:`depthlab.progress`."""
    from ..progress import make_progress

    return make_progress(total, progress)


def _matched_init(net: Network) -> str | None:
    """The network's initializer (``net.config``) when it is the variance-preserving one
    matched to its activation (its normal or uniform form: ``he_uniform`` for ReLU too) and
    its weights are still that initializer's draw, for a divergence's advice (judged as
    training starts: :meth:`Trainer.fit`); None otherwise or when the config does not say.
    Weights that have left the recipe (scaled by hand, :func:`depthlab.lsuv`, trained before:
    :func:`_weights_off_recipe`) are not credited to it: a He net scaled x10 that diverged was
    told it "already has a variance-preserving initializer"."""
    from ..diagnosis.prescriptions import recommended_init

    config = getattr(net, "config", None) or {}
    act, init = config.get("activation"), config.get("init")
    rec = recommended_init(act) if isinstance(act, str) else None
    if not (rec and isinstance(init, str)):
        return None

    def family(name: str) -> str:
        return name.removesuffix("_normal").removesuffix("_uniform")

    if family(init) != family(rec) or _weights_off_recipe(net, init):
        return None
    return init


def _weights_off_recipe(net: Network, init: str) -> bool:
    """Whether a hidden Dense layer's weights have left ``init``'s variance
    (:func:`depthlab.initializers.off_recipe_ratio`; the output layer may have its own
    ``output_init``)."""
    from ..initializers import off_recipe_ratio, weight_variance

    for d in net.dense_layers()[:-1]:
        w = d.W.value
        try:
            v = weight_variance(init, w.shape[0], w.shape[1])
        except (ValueError, TypeError):
            return False
        if off_recipe_ratio(w, v) is not None:
            return True
    return False


def fit(net: Network, x: ArrayLike, y: ArrayLike, x_val: ArrayLike | None = None,
        y_val: ArrayLike | None = None, **kwargs: Any) -> History:
    """Train ``net`` (see :class:`Trainer` for the options) and return its :class:`History`."""
    return Trainer(net, **kwargs).fit(x, y, x_val, y_val)


def _check_standardize_memory(x: Any, dtype: Any, what: str) -> None:
    """Refuse ``fit(standardize=True)`` on an ``x`` whose standardized copies cannot fit,
    before allocating: its float64 copy (unless it is float64), ``(x - mean) / std`` in
    float64 and that cast to the network's ``dtype`` are alive at once (a 1e9 x 4 float32 x:
    20 GB; it was numpy's MemoryError from inside the statistics or the subtraction)."""
    if not isinstance(x, np.ndarray) or x.ndim != 2:
        return  # a list or a wrong shape: check_xy names it
    per = (0 if x.dtype == np.float64 else 8) + 8 + np.dtype(dtype).itemsize
    if x.size * per >= CHECK_FROM_BYTES:
        check_fits(x.size * per, f"standardize=True on the {what} x ({x.shape[0]:,} x "
                   f"{x.shape[1]:,}: float64 copies and the {np.dtype(dtype).name} result)")
