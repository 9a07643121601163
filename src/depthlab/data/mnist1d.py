"""``mnist1d``: MNIST-1D (Greydanus 2020), generated locally with ``mnist1d.data.make_dataset``.

Never downloads: only the procedural generator is called. Each sample is one of ten 1-D digit
templates padded, scaled, translated, given correlated and i.i.d. noise, sheared and resampled to
40 points; the whole set is then centred and scaled to unit std by the generator. ``seed`` is the
generator's seed (the reference MNIST-1D is ``n=5000, seed=42``). The package seeds NumPy's global
RNG; its state is saved and restored around the call so nothing else is disturbed.
"""

from __future__ import annotations

import random

import numpy as np

from depthlab.data.dataset import RawData

DEFAULT_N = 5000
_FIXED = ("num_samples", "seed", "train_split", "url")


def generator_options() -> dict:
    """MNIST-1D generator parameters that may be overridden via ``load_dataset(**kwargs)``."""
    from mnist1d.data import get_dataset_args

    return {k: v for k, v in get_dataset_args(as_dict=True).items() if k not in _FIXED}


def load(*, n: int | None = None, seed: int = 0, dtype=None, rng=None, **options) -> RawData:
    """Generate ``n`` samples (default 5000) with generator seed ``seed``."""
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as exc:
        raise FileNotFoundError("mnist1d needs the 'mnist1d' package: pip install mnist1d") from exc
    n = DEFAULT_N if n is None else int(n)
    args = get_dataset_args(as_dict=False)
    allowed = generator_options()
    for key, value in options.items():
        if key not in allowed:
            raise TypeError(f"mnist1d: unknown option {key!r}; accepted: {sorted(allowed)}")
        setattr(args, key, value)
    args.num_samples = -(-n // 10) * 10  # the generator makes num_samples // 10 per class
    args.seed = int(seed)
    args.train_split = 1.0
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    x = np.asarray(data["x"])[:n]
    y = np.asarray(data["y"])[:n]
    return RawData(
        x=x,
        y=y,
        n_classes=10,
        sized=True,
        info={
            "source": "mnist1d.data.make_dataset (procedural, offline)",
            "description": "MNIST-1D: 1-D digit templates with random transformations, 40 features",
            "signal_length": int(args.final_seq_length),
            "generator_seed": int(seed),
            "generator_options": {k: getattr(args, k) for k in allowed},
            "class_names": [str(i) for i in range(10)],
        },
    )
