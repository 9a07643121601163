"""depthlab: train deep networks and see, predict and cure vanishing/exploding gradients.

Quick start::

    import depthlab as dl
    net = dl.mlp([64, 128, 128, 10], activation="tanh", init="glorot_uniform", seed=0)
    hist = dl.fit(net, x, y, loss="cross_entropy", optimizer="adam", lr=1e-3, epochs=5)
"""

from __future__ import annotations

from . import layers, theory
from .activations import ACTIVATIONS, get_activation
from .diagnosis import Diagnosis, Finding, doctor
from .initializers import INITIALIZERS, get_initializer
from .losses import LOSSES, get_loss
from .lsuv import lsuv
from .models import mlp
from .network import Network
from .optimizers import OPTIMIZERS, get_optimizer
from .parameter import Parameter
from .persist import load, save
from .probes import ProbeRecorder, probe
from .regularizers import add_penalty_gradient, penalty
from .spec import DataSpec, ModelSpec, ProbeSpec, RunSpec, TrainSpec
from .training import DivergenceReport, History, Trainer, fit, mc_dropout_predict

__version__ = "0.1.0"


def __getattr__(name: str):
    """``dl.plot`` imports matplotlib only when first used."""
    if name == "plot":
        import importlib

        return importlib.import_module(".plot", __name__)
    raise AttributeError(f"module 'depthlab' has no attribute {name!r}")


def loss(name: str, **kwargs):
    """A loss object by name: ``mse``, ``cross_entropy``, ``binary_cross_entropy``, ``huber``."""
    return get_loss(name, **kwargs)


def optimizer(name: str, params, **kwargs):
    """An optimizer by name (``sgd``, ``adagrad``, ``adadelta``, ``rmsprop``, ``adam``,
    ``nadam``) over ``params``, with ``torch.optim`` hyperparameter names and defaults."""
    return get_optimizer(name, params, **kwargs)


def activation(name: str, **kwargs):
    """An activation function object by name."""
    return get_activation(name, **kwargs)


def initializer(name: str, **kwargs):
    """An initializer ``init(shape, rng, dtype)`` by name."""
    return get_initializer(name, **kwargs)


__all__ = [
    "ACTIVATIONS",
    "INITIALIZERS",
    "LOSSES",
    "OPTIMIZERS",
    "DataSpec",
    "Diagnosis",
    "DivergenceReport",
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
