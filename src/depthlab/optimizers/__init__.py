"""Optimizers with ``torch.optim`` names, defaults and update rules; ``get_optimizer`` registry.

State is keyed by the :class:`~depthlab.parameter.Parameter` object; values are updated in
place; float32 parameters stay float32.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..parameter import Parameter
from .adadelta import Adadelta
from .adagrad import Adagrad
from .adam import Adam
from .base import Optimizer
from .nadam import NAdam
from .rmsprop import RMSprop
from .sgd import SGD

_REGISTRY: dict[str, type[Optimizer]] = {
    cls.name: cls for cls in (SGD, Adagrad, Adadelta, RMSprop, Adam, NAdam)
}
OPTIMIZERS: tuple[str, ...] = tuple(_REGISTRY)


def get_optimizer(name: str | Optimizer, params: Iterable[Parameter] | None = None,
                  **kwargs: Any) -> Optimizer:
    """Build the optimizer ``name`` (one of :data:`OPTIMIZERS`, case-insensitive) on ``params``.

    An :class:`Optimizer` instance is returned unchanged (it keeps its own hyperparameters;
    ``kwargs`` are ignored); ``params``, if given, must be the parameters it was built on.
    """
    if isinstance(name, Optimizer):
        if params is not None:
            given = list(params)
            if len(given) != len(name.params) or any(
                a is not b for a, b in zip(given, name.params)
            ):
                raise ValueError(
                    f"{type(name).__name__} instance was built on other parameters than the "
                    "ones given"
                )
        return name
    if not isinstance(name, str):
        raise TypeError(
            f"optimizer must be a name (one of {OPTIMIZERS}) or an Optimizer, got {name!r}"
        )
    cls = optimizer_class(name)
    if params is None:
        raise TypeError(f"get_optimizer({name!r}) needs the parameters to optimize")
    accepted = cls.hyperparameter_names()
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise TypeError(
            f"unknown hyperparameter(s) {unknown} for optimizer {name!r}; accepted: {accepted}"
        )
    return cls(params, **kwargs)


def optimizer_class(name: str) -> type[Optimizer]:
    """The optimizer class registered as ``name`` (case-insensitive); ValueError naming the
    registered names otherwise."""
    cls = _REGISTRY.get(name.strip().lower()) if isinstance(name, str) else None
    if cls is None:
        raise ValueError(f"unknown optimizer {name!r}; expected one of {OPTIMIZERS}")
    return cls


__all__ = [
    "OPTIMIZERS",
    "SGD",
    "Adadelta",
    "Adagrad",
    "Adam",
    "NAdam",
    "Optimizer",
    "RMSprop",
    "get_optimizer",
    "optimizer_class",
]
