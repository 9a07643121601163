"""What a training run leaves behind: per-step loss, per-epoch metrics, divergence report."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd


@dataclass
class DivergenceReport:
    """Where and when training stopped on a non-finite loss."""

    step: int
    epoch: int
    loss: float
    layer: str | None
    nonfinite_parameters: list[str]
    max_grad: float | None = None
    batchnorm: bool | None = None
    """Whether the network has batch normalization (None: not known); the advice then does
    not tell a batch-normalized network to add batch normalization."""
    before_update: bool = False
    """The loss was not finite at the first step, before any update: on the weights training
    started from, where the learning rate plays no part (the advice does not name it)."""
    matched_init: str | None = None
    """The network's initializer when it is the variance-preserving one matched to its
    activation (``lecun_normal`` for SELU, ``he_normal`` for ReLU; None: not, or not known);
    the advice then does not recommend a variance-preserving initializer."""
    zero_eps: str | None = None
    """The optimizer's name when its ``eps`` is 0 (Adam, RMSprop, Adagrad, Adadelta, NAdam
    accept it, as ``torch.optim`` does): ``m / (sqrt(v) + eps)`` is ``0 / 0`` = NaN for a
    weight whose gradient has been 0 at every step (an input that is always 0, a dead unit),
    which no learning rate prevents; the advice then names ``eps``."""

    @property
    def message(self) -> str:
        where = (
            f"first non-finite values came out of layer '{self.layer}'"
            if self.layer
            else ("the forward pass was finite; the loss itself overflowed")
        )
        params = (
            f"; non-finite parameters: {', '.join(self.nonfinite_parameters[:5])}"
            if self.nonfinite_parameters
            else ""
        )
        grad = (
            f"; largest |gradient| at the previous step {self.max_grad:.3g}"
            if self.max_grad
            else ""
        )
        if self.zero_eps and self.nonfinite_parameters and not self.before_update:
            # was: "Lower the learning rate ..." to Adam with eps = 0 on digits (NaN at step 2)
            advice = (f"{self.zero_eps} with eps = 0 divides 0 by 0 for a weight whose gradient "
                      "is 0 (an input that is always 0, a dead unit), which makes it NaN "
                      "whatever the learning rate: give eps > 0 (its default).")
        elif self.matched_init:  # was: "use a variance-preserving initializer" to a network
            # that has one (SELU + lecun_normal)
            has = f"the network already has a variance-preserving initializer, {self.matched_init}"
            has += ", and batch normalization" if self.batchnorm else ""
            advice = (("The loss was not finite before any update, on the weights training "
                       f"started from (the learning rate plays no part; {has}): check the "
                       "scale of the inputs (standardize them) and the loss.")
                      if self.before_update else
                      f"Lower the learning rate ({has})." if self.batchnorm else
                      f"Lower the learning rate or add batch normalization ({has}).")
        elif self.before_update:
            advice = ("The loss was not finite before any update, on the weights training "
                      "started from (the learning rate plays no part): use a variance-"
                      "preserving initializer" + (" (the network already has batch "
                      "normalization)." if self.batchnorm else ", or add batch normalization."))
        else:
            advice = ("Lower the learning rate or use a variance-preserving initializer (the "
                      "network already has batch normalization)." if self.batchnorm else
                      "Lower the learning rate, use a variance-preserving initializer, or add "
                      "batch normalization.")
        return (
            f"training diverged at step {self.step} (epoch {self.epoch}): loss = {self.loss}; "
            f"{where}{params}{grad}. {advice}"
        )

    def as_dict(self) -> dict[str, Any]:
        """The report's fields and its :attr:`message` as a dict (strict-JSON values)."""
        return {
            "step": self.step,
            "epoch": self.epoch,
            "loss": self.loss,
            "layer": self.layer,
            "nonfinite_parameters": self.nonfinite_parameters,
            "max_grad": self.max_grad,
            "message": self.message,
        }


@dataclass
class History:
    step_loss: list[float] = field(default_factory=list)
    epochs: list[dict[str, float]] = field(default_factory=list)
    evals: list[dict[str, float]] = field(default_factory=list)
    divergence: DivergenceReport | None = None
    seconds: float = 0.0
    standardizer: Any = None
    """The ``Standardize`` fitted on the training inputs (``fit(standardize=True)``): apply it
    to new inputs before ``net.predict``; None otherwise."""
    interrupted: bool = False
    """The last ``fit`` was stopped by Ctrl-C (``KeyboardInterrupt``) at the end of a step; a
    later ``fit`` that runs to its end clears it."""

    @property
    def diverged(self) -> bool:
        """Training stopped on a non-finite loss (:attr:`divergence` holds the report)."""
        return self.divergence is not None

    @property
    def status(self) -> str:
        """``"diverged"``, ``"interrupted"`` (Ctrl-C stopped the last ``fit``) or
        ``"finished"``."""
        if self.diverged:
            return "diverged"
        return "interrupted" if self.interrupted else "finished"

    @property
    def steps(self) -> int:
        """The number of optimizer updates so far."""
        return len(self.step_loss)

    def steps_frame(self) -> pd.DataFrame:
        """One row per update: ``step`` (from 1) and ``loss`` (the batch's loss before it)."""
        return pd.DataFrame({"step": range(1, len(self.step_loss) + 1), "loss": self.step_loss})

    def epochs_frame(self) -> pd.DataFrame:
        """One row per epoch: ``epoch``, ``step``, ``train_loss``, ``train_acc`` (over the
        whole training set after the epoch, in inference mode; unless ``eval_train=False``),
        ``val_loss``, ``val_acc`` (with validation data) and ``seconds``."""
        return pd.DataFrame(self.epochs)

    def evals_frame(self) -> pd.DataFrame:
        """One row per ``eval_every`` steps: ``step``, ``epoch``, ``val_loss``, ``val_acc``."""
        return pd.DataFrame(self.evals)

    def final(self) -> dict[str, float]:
        """Last epoch's metrics (empty before the first epoch ends)."""
        return dict(self.epochs[-1]) if self.epochs else {}

    def __repr__(self) -> str:
        from ..report.notebook import history_repr

        return history_repr(self)

    def _repr_html_(self) -> str:
        """Final metrics and the training curves (Jupyter)."""
        from ..report.notebook import history_html

        return history_html(self)
