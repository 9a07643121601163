"""``digits``: scikit-learn's bundled UCI optical digits (1,797 images 8x8, values 0..16 -> /16)."""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np

from depthlab.data.dataset import RawData


def _bundled_csv() -> Path | None:
    """scikit-learn's own ``datasets/data/digits.csv.gz`` (the file ``load_digits`` reads),
    found without importing scikit-learn; None where it is not there."""
    spec = importlib.util.find_spec("sklearn")  # a top-level package: found, not imported
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(folder) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            return path
    return None


def available() -> bool:
    """Whether scikit-learn, which bundles the data, is installed (nothing is downloaded)."""
    return importlib.util.find_spec("sklearn") is not None


def _load_digits() -> tuple[np.ndarray, np.ndarray, str]:
    """``sklearn.datasets.load_digits(return_X_y=True)``: pixels (1797, 64), labels and
    where they were read from (the file, or ``load_digits`` itself).

    Read from scikit-learn's bundled CSV as ``load_digits`` reads it (``np.loadtxt`` of the
    gzipped text, last column the label) without importing scikit-learn, whose import
    (SciPy's stats and more) cost each ``depthlab`` process that loads digits ~1-3 s of
    CPU; ``load_digits`` itself where the file is not found."""
    path = _bundled_csv()
    if path is None:
        from sklearn.datasets import load_digits

        x, y = load_digits(return_X_y=True)
        return x, y, "scikit-learn's sklearn.datasets.load_digits"
    with gzip.open(path, mode="rt", encoding="utf-8") as f:
        data = np.loadtxt(f, delimiter=",")
    return data[:, :-1], data[:, -1].astype(int, copy=False), f"scikit-learn's bundled {path}"


def load(*, n=None, seed=0, rng=None, dtype=None) -> RawData:
    """Raw pixel counts 0..16 (scale 1/16) and labels 0..9."""
    x, y, read_from = _load_digits()
    return RawData(
        x=x.astype(np.uint8),
        y=y.astype(np.int64),
        n_classes=10,
        scale=1.0 / 16.0,
        info={
            "source": f"{read_from} (UCI optical recognition of digits)",
            "description": "1,797 handwritten digits, 8x8, pixels scaled to [0, 1]",
            "image_shape": (8, 8),
            "class_names": [str(i) for i in range(10)],
        },
    )
