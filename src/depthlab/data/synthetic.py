"""Synthetic data sets: ``clusters`` (Gaussian classes), ``spirals`` (interleaved 2-D spirals)."""

from __future__ import annotations

from typing import Any

import numpy as np

from depthlab.backend import resolve_dtype, xp
from depthlab.data.dataset import RawData
from depthlab.validators import positive_int

CLUSTERS_DEFAULTS = {"n": 5000, "d": 64, "n_classes": 10, "separation": 3.0}
SPIRALS_DEFAULTS = {"n": 2000, "n_classes": 2, "noise": 0.1, "turns": 1.5}


def _non_negative(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"{name}={value!r} is not accepted; accepted: a finite number >= 0")
    v = float(value)
    if not np.isfinite(v) or v < 0:
        raise ValueError(f"{name}={value!r} must be a finite number >= 0")
    return v


OPTION_CHECKS: dict[str, dict[str, Any]] = {
    "clusters": {"d": lambda v: positive_int("d", v),
                 "n_classes": lambda v: positive_int("n_classes", v, 2),
                 "separation": lambda v: _non_negative("separation", v)},
    "spirals": {"n_classes": lambda v: positive_int("n_classes", v, 2),
                "noise": lambda v: _non_negative("noise", v),
                "turns": lambda v: _non_negative("turns", v)},
}
"""Each generated set's option checks (the generator's own), run when a config is validated:
a bad value failed only when the data were generated, so every point of a sweep was stored
failed (exit status 1) instead of one line before anything ran."""


def make_clusters(
    n: int,
    rng: np.random.Generator,
    *,
    d: int = 64,
    n_classes: int = 10,
    separation: float = 3.0,
    dtype: Any = "float32",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gaussian classes: ``x = mu_y + eps``, ``eps ~ N(0, I_d)``, ``y = i mod K`` (balanced).

    Class means ``mu_k = separation * g_k / ||g_k||`` with ``g_k ~ N(0, I_d)``: every mean lies at
    distance ``separation`` from the origin (two means are about ``separation * sqrt(2)`` apart).
    Returns ``(x, y, means)``.
    """
    n = positive_int("n", n)
    d = positive_int("d", d)
    k = positive_int("n_classes", n_classes, 2)
    sep = _non_negative("separation", separation)
    dt = resolve_dtype(dtype)
    g = rng.standard_normal((k, d))
    norms = np.linalg.norm(g, axis=1, keepdims=True)
    with np.errstate(over="ignore", invalid="ignore"):  # named below
        means = (sep * g / np.where(norms > 0, norms, 1.0)).astype(dt)
        y = np.arange(n, dtype=np.int64) % k
        x = rng.standard_normal((n, d), dtype=dt)
        xp.add(x, means[y], out=x)
    _check_range("separation", separation, x, dt)
    return x, y, means


def _check_range(name: str, value, x: np.ndarray, dt: np.dtype) -> None:
    """Refuse an option whose generated features overflow the dtype (e.g. separation =
    1e308: infinite features), naming the option rather than the features."""
    if not np.isfinite(x).all():
        raise ValueError(f"{name}={value!r} gives features beyond {np.dtype(dt).name}'s range "
                         f"(|x| <= {np.finfo(dt).max:.3g}); accepted: a smaller {name}")


def make_spirals(
    n: int,
    rng: np.random.Generator,
    *,
    n_classes: int = 2,
    noise: float = 0.1,
    turns: float = 1.5,
    dtype: Any = "float32",
) -> tuple[np.ndarray, np.ndarray]:
    """Interleaved 2-D spirals, one arm per class, ``y = i mod K``.

    ``t ~ U[0, 1]``, radius ``r = t``, angle ``phi = 2 pi (turns * t + y / K)``,
    ``x = r (cos phi, sin phi) + noise * N(0, I_2)``.
    """
    n = positive_int("n", n)
    k = positive_int("n_classes", n_classes, 2)
    noise = _non_negative("noise", noise)
    turns = _non_negative("turns", turns)
    dt = resolve_dtype(dtype)
    y = np.arange(n, dtype=np.int64) % k
    t = rng.random(n)
    with np.errstate(over="ignore", invalid="ignore"):  # named below
        phi = 2.0 * np.pi * (turns * t + y / k)
    if not np.isfinite(phi).all():  # cos(inf) = NaN: was blamed on the noise
        raise ValueError(f"turns={turns!r} gives angles beyond float64's range; accepted: a "
                         "finite number >= 0 well below 1e307 (1.5 by default)")
    x = np.stack([t * np.cos(phi), t * np.sin(phi)], axis=1)
    with np.errstate(over="ignore", invalid="ignore"):  # named below
        x += noise * rng.standard_normal((n, 2))
        x = x.astype(dt)
    _check_range("noise", noise, x, dt)
    return x, y


def load_clusters(
    *, n=None, seed=0, rng=None, dtype="float32", d=64, n_classes=10, separation=3.0
) -> RawData:
    """``clusters`` loader (see :func:`make_clusters`)."""
    n = CLUSTERS_DEFAULTS["n"] if n is None else n
    x, y, _ = make_clusters(n, rng, d=d, n_classes=n_classes, separation=separation, dtype=dtype)
    return RawData(
        x=x,
        y=y,
        n_classes=int(n_classes),
        sized=True,
        info={
            "source": "generated",
            "description": f"{n_classes} Gaussian classes in {d} dimensions, unit noise, "
            f"means at distance {separation} from the origin",
            "d": int(d),
            "separation": float(separation),
        },
    )


def load_spirals(
    *, n=None, seed=0, rng=None, dtype="float32", n_classes=2, noise=0.1, turns=1.5
) -> RawData:
    """``spirals`` loader (see :func:`make_spirals`)."""
    n = SPIRALS_DEFAULTS["n"] if n is None else n
    x, y = make_spirals(n, rng, n_classes=n_classes, noise=noise, turns=turns, dtype=dtype)
    return RawData(
        x=x,
        y=y,
        n_classes=int(n_classes),
        sized=True,
        info={
            "source": "generated",
            "description": f"{n_classes} interleaved 2-D spirals ({turns} turns, noise {noise})",
            "noise": float(noise),
            "turns": float(turns),
        },
    )
