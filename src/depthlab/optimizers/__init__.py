"""Optimizers with ``torch.optim`` names, defaults and update rules; ``get_optimizer`` registry.

State is keyed by the :class:`~depthlab.parameter.Parameter` object; values are updated in
place; float32 parameters stay float32.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..parameter import Parameter
from ..registry import Registry
from .adadelta import Adadelta
from .adagrad import Adagrad
from .adam import Adam, AdamW
from .adamax import Adamax
from .base import Optimizer, refuse_unknown_arguments
from .clip import clip_grad_norm_, clip_grad_value_
from .nadam import NAdam
from .radam import RAdam
from .rmsprop import RMSprop
from .schedulers import (
    ChainedScheduler,
    ConstantLR,
    CosineAnnealingLR,
    CosineAnnealingWarmRestarts,
    CyclicLR,
    ExponentialLR,
    LambdaLR,
    LinearLR,
    LRScheduler,
    MultiplicativeLR,
    MultiStepLR,
    OneCycleLR,
    PolynomialLR,
    ReduceLROnPlateau,
    SequentialLR,
    StepLR,
)
from .sgd import SGD

# every optimizer is listed (a config, the CLI and the playground offer each): RAdam and
# Adamax, ports of torch's, match torch.optim step for step as the others do (with weight
# decay, decoupled or not, several parameter groups, float32 and float64)
_LISTED = (SGD, Adagrad, Adadelta, RMSprop, Adam, AdamW, NAdam, RAdam, Adamax)
REGISTRY: Registry[Optimizer] = Registry(
    "optimizer", {cls.name: cls for cls in _LISTED},
    listed=tuple(cls.name for cls in _LISTED))
OPTIMIZERS: tuple[str, ...] = REGISTRY.names


def get_optimizer(name: str | Optimizer, params: Iterable[Parameter] | None = None,
                  **kwargs: Any) -> Optimizer:
    """Build the optimizer ``name`` (one of :data:`OPTIMIZERS`, case-insensitive) on ``params``.

    An :class:`Optimizer` instance is returned unchanged (it keeps its own hyperparameters:
    ``kwargs`` are refused, as a built loss or activation refuses them; they were silently
    ignored); ``params``, if given, must be the parameters it was built on (in any order when
    it has several parameter groups).
    """
    if isinstance(name, Optimizer):
        if kwargs:
            first = sorted(kwargs)[0]
            raise TypeError(
                f"cannot apply arguments {sorted(kwargs)} to the optimizer instance "
                f"{type(name).__name__} (it keeps its own hyperparameters); set them on it "
                f"(optimizer.{first} = {kwargs[first]!r}) or pass its name {name.name!r}")
        if params is not None:
            given = list(params)
            grouped = len(name.param_groups) > 1  # groups hold them in the groups' order
            if len(given) != len(name.params) or (
                {id(p) for p in given} != {id(p) for p in name.params} if grouped
                else any(a is not b for a, b in zip(given, name.params))
            ):
                raise ValueError(
                    f"{type(name).__name__} instance was built on other parameters than the "
                    "ones given"
                )
        return name
    if params is None:
        REGISTRY.key(name)  # an unknown name is the first thing to report
        raise TypeError(f"get_optimizer({name!r}) needs the parameters to optimize")
    if isinstance(name, str) and kwargs:  # torch's foreach= and the like: say what they are
        refuse_unknown_arguments(optimizer_class(name), kwargs)
    return REGISTRY.build(name, params, **kwargs)


def optimizer_class(name: str) -> type[Optimizer]:
    """The optimizer class registered as ``name`` (case-insensitive); ValueError naming the
    registered names otherwise."""
    return REGISTRY[name]  # type: ignore[return-value]


__all__ = [
    "OPTIMIZERS",
    "REGISTRY",
    "SGD",
    "Adadelta",
    "Adagrad",
    "ChainedScheduler",
    "ConstantLR",
    "CosineAnnealingLR",
    "CosineAnnealingWarmRestarts",
    "CyclicLR",
    "ExponentialLR",
    "LRScheduler",
    "LambdaLR",
    "LinearLR",
    "MultiStepLR",
    "MultiplicativeLR",
    "OneCycleLR",
    "PolynomialLR",
    "ReduceLROnPlateau",
    "SequentialLR",
    "StepLR",
    "Adam",
    "AdamW",
    "Adamax",
    "NAdam",
    "Optimizer",
    "RAdam",
    "RMSprop",
    "clip_grad_norm_",
    "clip_grad_value_",
    "get_optimizer",
    "optimizer_class",
]
