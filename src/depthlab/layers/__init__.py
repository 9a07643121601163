"""Layers: each with an explicit forward and backward pass."""

from .activation import Activation
from .base import Layer
from .batchnorm import BatchNorm
from .dense import Dense
from .dropout import AlphaDropout, Dropout
from .residual import Residual
from .sequential import Sequential
from .standardize import Standardize

__all__ = [
    "Activation",
    "AlphaDropout",
    "BatchNorm",
    "Dense",
    "Dropout",
    "Layer",
    "Residual",
    "Sequential",
    "Standardize",
]
