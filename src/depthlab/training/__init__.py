"""Training: the loop, its history, divergence reports, early stopping and Monte Carlo dropout."""

from .early_stopping import EarlyStopping
from .history import DivergenceReport, History
from .mc_dropout import mc_dropout_predict
from .trainer import Callback, Trainer, fit

__all__ = ["Callback", "DivergenceReport", "EarlyStopping", "History", "Trainer", "fit",
           "mc_dropout_predict"]
