"""nphunt39 (round 39): regressions found hunting the NumPy engine with unusual but legal inputs."""

from __future__ import annotations

import numpy as np

import depthlab as dl


def _data(n: int = 24, d: int = 5, c: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)).astype(np.float32), rng.integers(0, c, n)


def _params(net) -> list[np.ndarray]:
    return [p.value.copy() for p in net.parameters()]


def test_dropout_generator_survives_save_and_load(tmp_path) -> None:
    """Training resumed after dl.save/dl.load follows the uninterrupted run bit for bit: the
    dropout layers' generators are saved with the weights (a reloaded network drew its masks
    from the seed's first state again, so its trajectory left the uninterrupted one)."""
    x, y = _data()
    for options in ({"dropout": 0.3}, {"dropout": 0.2, "dropout_type": "alpha",
                                       "activation": "selu"},
                    {"dropout": 0.25, "input_dropout": 0.1, "residual": True}):
        kw = {"activation": "relu", **options}
        whole = dl.mlp([5, 8, 8, 3], seed=3, **kw)
        dl.fit(whole, x, y, epochs=4, batch_size="full", lr=0.05)
        first = dl.mlp([5, 8, 8, 3], seed=3, **kw)
        dl.fit(first, x, y, epochs=2, batch_size="full", lr=0.05)
        dl.save(first, tmp_path / "half.npz")
        resumed = dl.load(tmp_path / "half.npz")
        dl.fit(resumed, x, y, epochs=2, batch_size="full", lr=0.05)
        for a, b in zip(_params(whole), _params(resumed)):
            np.testing.assert_array_equal(a, b, err_msg=str(options))


def test_damaged_dropout_state_is_one_clear_line(tmp_path) -> None:
    """An archive whose dropout generator state is not one names the file and the entry."""
    import pytest

    net = dl.mlp([3, 4, 2], dropout=0.5, seed=0)
    path = dl.save(net, tmp_path / "n.npz")
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["dropout:0:rng"] = np.frombuffer(b'{"bit_generator": "MT19937"}', dtype=np.uint8)
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=r"dropout:0:rng is not a dropout generator's state"):
        dl.load(path)
