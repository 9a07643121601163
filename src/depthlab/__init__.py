"""depthlab: train deep networks and see, predict and cure vanishing/exploding gradients.

Quick start::

    import depthlab as dl
    from depthlab.data import load_dataset
    data = load_dataset("digits", seed=0, standardize=True)   # built in, offline
    net = dl.mlp([64, 128, 128, 10], activation="tanh", init="glorot_uniform", seed=0)
    hist = dl.fit(net, data.x_train, data.y_train, data.x_val, data.y_val,
                  loss="cross_entropy", optimizer="adam", lr=1e-3, epochs=5, seed=0)
    print(hist.epochs_frame()[["epoch", "train_loss", "val_acc"]].round(3))

The command line: ``depthlab --help`` (``depthlab demo --out demo-out`` trains a 20-layer
network four ways and writes a report); PyTorch models: ``help(depthlab.torch)``.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for the annotations only: `import depthlab` stays lazy
    from .activations import ActivationFn
    from .initializers import Initializer
    from .losses import Loss
    from .optimizers import Optimizer
    from .parameter import Parameter

__version__ = "0.1.0"

# Public names -> (module, attribute; None for the module itself). Imported on first use, so
# that ``import depthlab`` and the command line start fast and a Ctrl-C during start-up is
# handled by the CLI like any other.
_LAZY: dict[str, tuple[str, str | None]] = {
    "layers": (".layers", None),
    "theory": (".theory", None),
    "plot": (".plot", None),
    "ACTIVATIONS": (".activations", "ACTIVATIONS"),
    "get_activation": (".activations", "get_activation"),
    "Diagnosis": (".diagnosis", "Diagnosis"),
    "Finding": (".diagnosis", "Finding"),
    "doctor": (".diagnosis", "doctor"),
    "INITIALIZERS": (".initializers", "INITIALIZERS"),
    "get_initializer": (".initializers", "get_initializer"),
    "LOSSES": (".losses", "LOSSES"),
    "get_loss": (".losses", "get_loss"),
    "lsuv": (".lsuv", "lsuv"),
    "mlp": (".models", "mlp"),
    "Network": (".network", "Network"),
    "OPTIMIZERS": (".optimizers", "OPTIMIZERS"),
    "get_optimizer": (".optimizers", "get_optimizer"),
    "Parameter": (".parameter", "Parameter"),
    "load": (".persist", "load"),
    "save": (".persist", "save"),
    "ProbeRecorder": (".probes", "ProbeRecorder"),
    "probe": (".probes", "probe"),
    "add_penalty_gradient": (".regularizers", "add_penalty_gradient"),
    "penalty": (".regularizers", "penalty"),
    "DataSpec": (".spec", "DataSpec"),
    "ModelSpec": (".spec", "ModelSpec"),
    "ProbeSpec": (".spec", "ProbeSpec"),
    "RunSpec": (".spec", "RunSpec"),
    "TrainSpec": (".spec", "TrainSpec"),
    "DivergenceReport": (".training", "DivergenceReport"),
    "EarlyStopping": (".training", "EarlyStopping"),
    "History": (".training", "History"),
    "Trainer": (".training", "Trainer"),
    "fit": (".training", "fit"),
    "mc_dropout_predict": (".training", "mc_dropout_predict"),
}


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use (see :data:`_LAZY`); any other subpackage
    or module of depthlab is imported as an attribute too (``dl.diagnosis.RULES``,
    ``dl.probes.PERCENTILES``), as if ``import depthlab.NAME`` had run."""
    try:
        module, attr = _LAZY[name]
    except KeyError:
        if name.startswith("_") or importlib.util.find_spec(f"{__name__}.{name}") is None:
            raise AttributeError(f"module 'depthlab' has no attribute {name!r}") from None
        module, attr = f".{name}", None
    mod = importlib.import_module(module, __name__)
    value = mod if attr is None else getattr(mod, attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


class _Package(types.ModuleType):
    """depthlab's module object. The import system binds a submodule, once it is first imported,
    as an attribute of its package: ``import depthlab.lsuv`` (or ``from depthlab.lsuv import
    lsuv``) made ``dl.lsuv`` the module, so ``dl.lsuv(net, x)`` raised "'module' object is not
    callable" (in the test suite, depending on which test imported it first). A public name of
    :data:`_LAZY` that is an attribute of the submodule of the same name stays that attribute."""

    def __setattr__(self, name: str, value: Any) -> None:
        target = _LAZY.get(name)
        if target is not None and target[1] is not None \
                and isinstance(value, types.ModuleType) \
                and value.__name__ == f"{__name__}{target[0]}":
            value = getattr(value, target[1])
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def loss(name: str, **kwargs: Any) -> Loss:
    """A loss object by name: ``mse`` (``mean (pred - y)^2``), ``cross_entropy`` (logits:
    ``mean_i (logsumexp(z_i) - z_i[y_i])``; integer or one-hot labels),
    ``binary_cross_entropy`` (logits: ``mean softplus(z) - y z``), ``huber`` (``delta = 1``:
    ``mean 0.5 r^2`` for ``|r| <= delta``, ``delta (|r| - delta/2)`` beyond). ``forward(pred,
    target) -> float``, ``backward() -> dL/dpred``."""
    from .losses import get_loss

    return get_loss(name, **kwargs)


def optimizer(name: str, params: Iterable[Parameter], **kwargs: Any) -> Optimizer:
    """An optimizer by name (``sgd``, ``adagrad``, ``adadelta``, ``rmsprop``, ``adam``,
    ``adamw``, ``nadam``, ``radam``, ``adamax``) over ``params`` (e.g. ``net.parameters()``),
    with ``torch.optim`` hyperparameter names, defaults and update rules; ``step()`` updates
    every ``.value`` in place from its ``.grad`` (sgd: ``v = mu v + g``, ``w -= lr v``)."""
    from .optimizers import get_optimizer

    return get_optimizer(name, params, **kwargs)


def activation(name: str, **kwargs: Any) -> ActivationFn:
    """An activation function object by name (:data:`ACTIVATIONS`): ``forward(s) = f(s)``,
    ``derivative(s, a) = f'(s)``, ``backward(s, a, dL/da) = dL/da * f'(s)``."""
    from .activations import get_activation

    return get_activation(name, **kwargs)


def initializer(name: str, **kwargs: Any) -> Initializer:
    """An initializer ``init(shape, rng, dtype)`` by name (:data:`INITIALIZERS`); the
    variance-scaling ones draw ``Var W = scale / fan`` (glorot: ``2 / (fan_in + fan_out)``,
    he: ``2 / fan_in``, lecun: ``1 / fan_in``)."""
    from .initializers import get_initializer

    return get_initializer(name, **kwargs)


__all__ = [
    "ACTIVATIONS",
    "INITIALIZERS",
    "LOSSES",
    "OPTIMIZERS",
    "DataSpec",
    "Diagnosis",
    "DivergenceReport",
    "EarlyStopping",
    "Finding",
    "History",
    "ModelSpec",
    "Network",
    "Parameter",
    "ProbeRecorder",
    "ProbeSpec",
    "RunSpec",
    "TrainSpec",
    "Trainer",
    "activation",
    "add_penalty_gradient",
    "doctor",
    "fit",
    "get_activation",
    "get_initializer",
    "get_loss",
    "get_optimizer",
    "initializer",
    "layers",
    "loss",
    "load",
    "lsuv",
    "mc_dropout_predict",
    "mlp",
    "optimizer",
    "penalty",
    "probe",
    "save",
    "theory",
]
