"""diaghunt39 (round 39): the NumPy doctor on variations of its known-answer cases."""

from __future__ import annotations

import numpy as np

import depthlab as dl


def _spirals_like(seed: int = 0, n: int = 240) -> tuple[np.ndarray, ...]:
    """Two noisy interleaved spirals in 2-d, standardized (train, labels, val, labels)."""
    rng = np.random.default_rng(seed)
    t = rng.uniform(0.25, 3.0, n) * np.pi
    y = rng.integers(0, 2, n)
    r = t / (3.0 * np.pi)
    x = np.stack([r * np.cos(t + np.pi * y), r * np.sin(t + np.pi * y)], 1)
    x = (x + 0.05 * rng.standard_normal(x.shape)).astype(np.float32)
    x = (x - x.mean(0)) / x.std(0)
    k = n * 3 // 4
    return x[:k], y[:k], x[k:], y[k:]


def test_a_zeros_init_cure_in_small_layers_says_why_its_variance_is_not_judged() -> None:
    """A 2-4-4-2 tanh net initialized with zeros: the finding (variance 0, judged in any layer
    of >= 2 units) is cured by Glorot, whose random weights in layers of 8 and 16 weights are
    too few to judge a variance on (INIT_MIN_WEIGHTS 20). The line read "init variance factor
    inf -> none (the cure left nothing this metric measures)", as if Glorot had removed the
    weights; it now says what was not judged and why."""
    net = dl.mlp([2, 4, 4, 2], activation="tanh", init="zeros", seed=0)
    d = dl.doctor(net, _spirals_like(), steps=40, verify=True, lr=0.05, momentum=0.9)
    (v,) = [v for v in d.verifications if v.kind == "init_mismatch"]
    line = v.summary()
    assert "left nothing this metric measures" not in line, line
    assert "init variance factor inf (a variance of 0: all weights equal) -> none judged" \
        in line, line
    assert "fewer than 20 weights" in line, line


def test_steps_on_weights_that_started_at_zero_are_not_called_a_too_high_learning_rate() -> None:
    """A sigmoid net initialized with zeros: every update is large against weights of norm 0
    (||dW|| / ||W|| = 3.5 at lr 0.01), so lr_too_high fired beside init_mismatch; its cure, a
    10x smaller rate, left the net at chance ("did not help"): the steps are the zero init's,
    whose finding names it. A too-high rate on a random init is still found."""
    from depthlab.data import load_dataset

    data = load_dataset("digits", seed=0, standardize=True)
    zeros = dl.doctor(dl.mlp([64, 16, 16, 16, 16, 10], "sigmoid", init="zeros", seed=0), data,
                      steps=40)
    kinds = [f.kind for f in zeros.findings]
    assert "init_mismatch" in kinds and "lr_too_high" not in kinds, kinds
    high = dl.doctor(dl.mlp([64, 16, 16, 16, 16, 10], "sigmoid", init="glorot_uniform",
                            seed=0), data, steps=40, optimizer="adam", lr=1.0)
    assert "lr_too_high" in [f.kind for f in high.findings], [f.kind for f in high.findings]
