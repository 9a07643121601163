"""``mnist1d``: MNIST-1D (Greydanus 2020), generated locally with ``mnist1d.data.make_dataset``.

Never downloads: only the procedural generator is called. Each sample is one of ten 1-D digit
templates padded, scaled, translated, given correlated and i.i.d. noise, sheared and resampled to
40 points; the whole set is then centred and scaled to unit std by the generator. ``seed`` is the
generator's seed (the reference MNIST-1D is ``n=5000, seed=42``). The package seeds NumPy's global
RNG; its state is saved and restored around the call so nothing else is disturbed, and one
thread at a time generates (``_GLOBAL_RNG``), so the data of a seed is the same whatever other
threads of the process generate meanwhile.
"""

from __future__ import annotations

import math
import random
import threading
from typing import Any

import numpy as np

from depthlab.data.dataset import RawData
from depthlab.memory import check_fits

DEFAULT_N = 5000
_GLOBAL_RNG = threading.Lock()
"""Held while the generator runs: it seeds NumPy's (and Python's) global RNG and draws from
it, so two threads generating at once (a Dask worker's threads running two sweep points, data
seeds 0 and 1) drew from each other's streams and got other data than their seeds name."""
_FIXED = ("num_samples", "seed", "train_split", "url")


def generator_options() -> dict:
    """MNIST-1D generator parameters that may be overridden via ``load_dataset(**kwargs)``."""
    from mnist1d.data import get_dataset_args

    return {k: v for k, v in get_dataset_args(as_dict=True).items() if k not in _FIXED}


_INTS = {"template_len": 1, "max_translation": 1, "final_seq_length": 1}  # the least accepted
_SCALES = ("scale_coeff", "corr_noise_scale", "iid_noise_scale", "shear_scale")


def option_names() -> tuple[str, ...] | None:
    """The generator options a config may set (``data.options``), or None when the mnist1d
    package is missing (its loader then says how to install it)."""
    try:
        return tuple(generator_options())
    except ImportError:
        return None


def _check_option(key: str, value: Any, said: str | None = None) -> Any:
    """``value`` of generator option ``key`` when it is one the generator can use (they went
    to it unchecked: a negative length was accepted, a huge one allocated until killed).
    ``said``: how the refusal names the value (default ``mnist1d: key=value``; a config's
    check names its key)."""
    def refuse(accepted: str) -> ValueError:
        named = f"mnist1d: {key}={value!r}" if said is None else said
        return ValueError(f"{named} is not accepted; accepted: {accepted}")

    def integer(v: Any) -> bool:
        return isinstance(v, int | np.integer) and not isinstance(v, bool)

    if key in _INTS:
        if not integer(value) or value < _INTS[key]:
            raise refuse(f"an integer >= {_INTS[key]}")
        return int(value)
    if key in _SCALES:
        if (isinstance(value, bool) or not isinstance(value, int | float | np.integer
                                                      | np.floating)
                or not math.isfinite(value) or value < 0):
            raise refuse("a finite number >= 0")
        return float(value)
    if key == "padding":
        if (not isinstance(value, list | tuple) or len(value) != 2
                or not all(integer(v) for v in value) or not 0 <= value[0] <= value[1]):
            raise refuse("[low, high], integers with 0 <= low <= high (zeros added to each "
                         "template)")
        return [int(v) for v in value]
    if key == "shuffle_seq":
        if not isinstance(value, bool | np.bool_):
            raise refuse("true or false")
        return bool(value)
    return value


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
            from depthlab.data.registry import unknown_option_message

            raise TypeError(unknown_option_message("mnist1d", key, sorted(allowed)))
        setattr(args, key, _check_option(key, value))
    length, longest = int(args.final_seq_length), int(args.template_len) + int(args.padding[-1])
    # the generator keeps every sample (float64) and copies the stacked set about three
    # times; each sample is first resampled to template_len + padding[1] points
    check_fits(8 * (4 * max(n, 10) * length + 8 * longest),
               f"mnist1d (n={n}, final_seq_length={length}, template_len + padding[1] = "
               f"{longest})")
    args.num_samples = -(-n // 10) * 10  # the generator makes num_samples // 10 per class
    args.seed = int(seed)
    args.train_split = 1.0
    overflowed: list[str] = []
    with _GLOBAL_RNG:  # one generation at a time: it seeds and draws the process's global RNG
        np_state, py_state = np.random.get_state(), random.getstate()
        try:
            # an overflowing option is named below; the overflow is recorded, not only looked
            # for in the result: the generator ends with x / x.std(), and a std that
            # overflowed to inf made every feature 0 (iid_noise_scale = 1e200 trained a run
            # on zeros)
            with np.errstate(all="ignore", over="call",
                             call=lambda kind, _flag: overflowed.append(kind)):
                data = make_dataset(args)
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)
    x = np.asarray(data["x"])[:n]
    if options and (overflowed or not np.isfinite(x).all()):  # was: features all 0, or
        given = ", ".join(f"{k}={v!r}" for k, v in options.items())  # 'contain NaN/inf'
        raise ValueError(f"mnist1d: the generator options {given} overflow float64 (features "
                         "of inf, or of 0 once divided by their infinite std); accepted: "
                         "smaller values (the defaults: "
                         f"{', '.join(f'{k}={v!r}' for k, v in allowed.items() if k in options)})")
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
