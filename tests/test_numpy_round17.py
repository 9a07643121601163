"""Round 17, NumPy science: the doctor's claims, theory and probes on the cases a user meets
(activation and initializer objects, degenerate data and inputs)."""

from __future__ import annotations

import numpy as np

import depthlab as dl
from depthlab.activations import Tanh


def task(n=200, d=8, k=3, seed=1):
    """A noisy linear 3-class task (float32)."""
    g = np.random.default_rng(seed)
    x = g.normal(size=(n, d)).astype(np.float32)
    y = np.argmax(x @ g.normal(size=(d, k)) + 0.3 * g.normal(size=(n, k)), axis=1)
    return x, y


X, Y = task()


def test_an_activation_object_gets_the_findings_of_its_name():
    kinds = {}
    for act in ("tanh", Tanh()):
        net = dl.mlp([8, 32, 32, 32, 32, 3], act, "normal", seed=0)
        d = dl.doctor(net, (X, Y), steps=5)
        kinds[str(act)] = {f.kind: f.prescription for f in d.findings}
    assert kinds["Tanh()"].get("init_mismatch") == {"init": "glorot_uniform"}
    assert kinds["Tanh()"] == kinds["tanh"]
