"""Training: the loop, its history, divergence reports and Monte Carlo dropout."""

from .history import DivergenceReport, History
from .mc_dropout import mc_dropout_predict
from .trainer import Callback, Trainer, fit

__all__ = ["Callback", "DivergenceReport", "History", "Trainer", "fit", "mc_dropout_predict"]
