"""``digits``: scikit-learn's bundled UCI optical digits (1,797 images 8x8, values 0..16 -> /16)."""

from __future__ import annotations

import numpy as np

from depthlab.data.dataset import RawData


def load(*, n=None, seed=0, rng=None, dtype=None) -> RawData:
    """Raw pixel counts 0..16 (scale 1/16) and labels 0..9."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return RawData(
        x=x.astype(np.uint8),
        y=y.astype(np.int64),
        n_classes=10,
        scale=1.0 / 16.0,
        info={
            "source": "sklearn.datasets.load_digits (UCI optical recognition of digits)",
            "description": "1,797 handwritten digits, 8x8, pixels scaled to [0, 1]",
            "image_shape": (8, 8),
            "class_names": [str(i) for i in range(10)],
        },
    )
