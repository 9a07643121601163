"""One-click setups that tell the vanishing-gradient story in order.

A preset sets the network and training controls (the others return to their defaults); the data
set and the seed stay as the learner chose them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .setup import DEFAULTS

PRESETS: dict[str, dict[str, Any]] = {
    "naive": {
        "title": "naive: sigmoid + N(0, 1)",
        # 30 layers: at 10 the gradient shrank only 12x towards the input (first / last 0.08
        # on the spirals at step 0), and the "saturate every sigmoid" beside a saturation
        # panel reading 1% to 27% was not what the page showed
        "why": "the textbook net of the 1990s: weights N(0, 1) push many sigmoid units into "
               "their flat tails (the saturation panel) and the gradient shrinks by orders of "
               "magnitude towards the input",
        "set": {"model.depth": 30, "model.width": 32, "model.activation": "sigmoid",
                "model.init": "normal", "train.lr": 0.1},
    },
    "glorot": {
        "title": "Glorot: tanh + glorot_uniform",
        "why": "Var(W) = 2 / (fan_in + fan_out) keeps tanh in its linear range (Glorot & "
               "Bengio 2010)",
        "set": {"model.depth": 10, "model.width": 32, "model.activation": "tanh",
                "model.init": "glorot_uniform", "train.lr": 0.05},
    },
    "he": {
        "title": "He: ReLU + he_normal",
        "why": "Var(W) = 2 / fan_in makes up for ReLU zeroing half its inputs (He et al. 2015)",
        "set": {"model.depth": 20, "model.width": 32, "model.activation": "relu",
                "model.init": "he_normal", "train.lr": 0.02},
    },
    "batchnorm": {
        "title": "batch norm: ReLU + He + BN",
        # the gradient panel then rises 140x towards the input (10^2.1 on the spirals at step
        # 0, after He's flat 0.75), and the story said nothing of it; the doctor calls it
        # exploding_gradients (1.30 per layer measured, 1.21 predicted)
        "why": "normalizing every layer's inputs over the mini-batch keeps each layer's "
               "statistics fixed while the weights move (Ioffe & Szegedy 2015); the gradient "
               "panel shows its price: batch norm itself makes the gradient grow about 1.2x "
               "per ReLU layer towards the input (Yang et al. 2019), which the residual "
               "preset bounds",
        "set": {"model.depth": 20, "model.width": 32, "model.activation": "relu",
                "model.init": "he_normal", "model.batchnorm": True, "train.lr": 0.05},
    },
    "residual": {
        "title": "residual + BN, 1000 layers",
        "why": "x + F(x): the identity path carries the gradient past every block, so 1000 "
               "layers train (He et al. 2016)",
        "set": {"model.depth": 1000, "model.width": 16, "model.activation": "relu",
                "model.init": "he_normal", "model.batchnorm": True, "model.residual": True,
                "train.lr": 0.01},
    },
    "selu": {
        "title": "SELU: self-normalizing",
        "why": "SELU with lecun_normal has an attracting fixed point at mean 0, variance 1 "
               "(Klambauer et al. 2017)",
        "set": {"model.depth": 20, "model.width": 32, "model.activation": "selu",
                "model.init": "lecun_normal", "train.lr": 0.02},
    },
}

_KEEP = ("data.", "train.seed", "train.epochs")


def kept(query: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a page's query that a preset keeps (data set, seed, epochs; unknown keys
    too, so that they are still named): a bad value in a control the preset sets anyway
    (depth ``abc``) does not stop the learner from choosing a preset."""
    return {k: v for k, v in query.items() if k.startswith(_KEEP) or k not in DEFAULTS}


def apply_preset(setup: Mapping[str, Any], name: str) -> dict[str, Any]:
    """``setup`` with preset ``name`` applied (unknown names raise ``ValueError``)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; accepted: {', '.join(PRESETS)}")
    out = {k: (v if k.startswith(_KEEP) else DEFAULTS[k]) for k, v in setup.items()}
    out.update(PRESETS[name]["set"])
    return out
