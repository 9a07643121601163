"""Weight initializers.

An initializer is a callable ``init(shape, rng, dtype="float32") -> array``. Dense weights have
shape ``(fan_in, fan_out)``; for a 1-D shape (a bias) ``fan_in = fan_out = shape[0]``. Samples
are drawn in float64 from the ``numpy.random.Generator`` and cast to ``dtype``, so the same
seed gives the same weights (up to rounding) in float32 and float64.

Glorot, He and LeCun initializers are special cases of :func:`variance_scaling`:

=================  ==========================  ==============
name               Var(W)                      distribution
=================  ==========================  ==============
glorot_normal      2 / (fan_in + fan_out)      normal
glorot_uniform     2 / (fan_in + fan_out)      uniform
he_normal          2 / fan_in                  normal
he_uniform         2 / fan_in                  uniform
lecun_normal       1 / fan_in                  normal
lecun_uniform      1 / fan_in                  uniform
fan_in_uniform     1 / (3 fan_in)              U[-1/sqrt(fan_in), 1/sqrt(fan_in)]
=================  ==========================  ==============

Normals are untruncated. ``weight_variance(name, fan_in, fan_out, **kw)`` returns the variance
of each entry without sampling (for theory code). LSUV lives in ``depthlab.lsuv``.
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Callable
from typing import Any

import numpy as np

from .backend import Array, resolve_dtype, xp
from .backend import rng as make_rng

__all__ = [
    "INITIALIZERS",
    "Initializer",
    "compute_fans",
    "constant",
    "fan_in_uniform",
    "get_initializer",
    "glorot_normal",
    "glorot_uniform",
    "he_normal",
    "he_uniform",
    "lecun_normal",
    "lecun_uniform",
    "normal",
    "orthogonal",
    "uniform",
    "variance_scaling",
    "weight_variance",
    "zeros",
]

_MODES = ("fan_in", "fan_out", "fan_avg")
_DISTRIBUTIONS = ("normal", "uniform")


def compute_fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight shape.

    ``()`` -> (1, 1); ``(n,)`` -> (n, n); ``(fan_in, fan_out)`` for Dense weights; for more
    dimensions ``(..., in, out)`` the leading dimensions form a receptive field ``r`` and the
    fans are ``(r * in, r * out)``.
    """
    shape = _check_shape(shape)
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive = math.prod(shape[:-2])
    return receptive * shape[-2], receptive * shape[-1]


def _check_shape(shape: Any) -> tuple[int, ...]:
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
        shape = (shape,)
    try:
        out = tuple(shape)
    except TypeError as exc:
        raise TypeError(f"shape must be a tuple of positive ints, got {shape!r}") from exc
    for n in out:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"shape must be a tuple of positive ints, got {shape!r}")
    return tuple(int(n) for n in out)


def _real(name: str, value: Any, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    out = float(value)
    if not math.isfinite(out) or (positive and out <= 0):
        kind = "a finite number > 0" if positive else "finite"
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    return out


class Initializer:
    """A named initializer ``init(shape, rng, dtype) -> array`` with its theoretical variance.

    ``sample(shape, rng)`` draws float64 values; ``variance(fan_in, fan_out)`` is Var(W_ij).
    Subclasses hold their settings in ``params``.
    """

    name = "initializer"

    def __init__(self, name: str, params: dict[str, Any], doc: str) -> None:
        self.name = name
        self.params = params
        self.__doc__ = doc

    def sample(self, shape: tuple[int, ...], gen: np.random.Generator) -> Array:
        raise NotImplementedError

    def variance(self, fan_in: int, fan_out: int) -> float:
        raise NotImplementedError

    def limit(self, fan_in: int, fan_out: int) -> float | None:
        """Bound on |W| for uniform initializers, None otherwise."""
        return None

    def __call__(
        self, shape: tuple[int, ...], rng: np.random.Generator | int | None = None,
        dtype: Any = "float32",
    ) -> Array:
        shape = _check_shape(shape)
        dt = resolve_dtype(dtype)
        w = xp.asarray(self.sample(shape, make_rng(rng)), dtype=dt)
        lim = self.limit(*compute_fans(shape))
        if lim is not None and dt != np.float64:
            # rounding to float32 must not push a sample past the limit
            lim32 = dt.type(lim)
            if float(lim32) > lim:
                lim32 = np.nextafter(lim32, dt.type(0))
            xp.clip(w, -lim32, lim32, out=w)
        return w

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{self.name}({args})"


class _VarianceScaling(Initializer):
    def __init__(self, name: str, scale: float, mode: str, distribution: str, doc: str) -> None:
        scale = _real("scale", scale, positive=True)
        if mode not in _MODES:
            raise ValueError(f"unknown mode {mode!r}; expected one of: {', '.join(_MODES)}")
        if distribution not in _DISTRIBUTIONS:
            raise ValueError(
                f"unknown distribution {distribution!r}; expected one of: "
                f"{', '.join(_DISTRIBUTIONS)}"
            )
        params = {"scale": scale, "mode": mode, "distribution": distribution}
        super().__init__(name, params, doc)
        self.scale, self.mode, self.distribution = scale, mode, distribution

    def _fan(self, fan_in: int, fan_out: int) -> float:
        if self.mode == "fan_in":
            return float(fan_in)
        if self.mode == "fan_out":
            return float(fan_out)
        return (fan_in + fan_out) / 2.0

    def variance(self, fan_in: int, fan_out: int) -> float:
        return self.scale / self._fan(fan_in, fan_out)

    def limit(self, fan_in: int, fan_out: int) -> float | None:
        if self.distribution == "uniform":
            return math.sqrt(3.0 * self.variance(fan_in, fan_out))
        return None

    def sample(self, shape: tuple[int, ...], gen: np.random.Generator) -> Array:
        fan_in, fan_out = compute_fans(shape)
        if self.distribution == "normal":
            return gen.normal(0.0, math.sqrt(self.variance(fan_in, fan_out)), size=shape)
        lim = self.limit(fan_in, fan_out)
        return gen.uniform(-lim, lim, size=shape)


def variance_scaling(
    scale: float = 1.0, mode: str = "fan_in", distribution: str = "normal"
) -> Initializer:
    """Var(W) = scale / fan with fan = fan_in, fan_out or (fan_in + fan_out) / 2 (``mode``).

    ``normal``: N(0, scale / fan), untruncated; ``uniform``: U[-sqrt(3 scale / fan),
    +sqrt(3 scale / fan)] (the same variance).
    """
    fan = {"fan_in": "fan_in", "fan_out": "fan_out", "fan_avg": "(fan_in + fan_out)/2"}.get(
        mode, str(mode)
    )
    return _VarianceScaling(
        "variance_scaling", scale, mode, distribution,
        f"Variance scaling: {distribution} with Var(W) = {scale!r} / {fan}.",
    )


def _named_vs(name: str, scale: float, mode: str, distribution: str, doc: str) -> Initializer:
    init = variance_scaling(scale=scale, mode=mode, distribution=distribution)
    init.name = name
    init.__doc__ = doc
    return init


def glorot_normal() -> Initializer:
    """Glorot/Xavier normal N(0, Var(W)) with Var(W) = 2 / (fan_in + fan_out) =
    variance_scaling(1, fan_avg, normal)."""
    return _named_vs("glorot_normal", 1.0, "fan_avg", "normal", glorot_normal.__doc__)


def glorot_uniform() -> Initializer:
    """Glorot/Xavier "normalized" init: U[-sqrt(6 / (fan_in + fan_out)), +...], Var(W) =
    2 / (fan_in + fan_out) = variance_scaling(1, fan_avg, uniform)."""
    return _named_vs("glorot_uniform", 1.0, "fan_avg", "uniform", glorot_uniform.__doc__)


def _check_mode(mode: str) -> str:
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"unknown mode {mode!r}; expected one of: fan_in, fan_out")
    return mode


def he_normal(mode: str = "fan_in") -> Initializer:
    """He/Kaiming normal N(0, Var(W)) with Var(W) = 2 / fan_in (2 / fan_out with
    mode="fan_out") = variance_scaling(2, mode, normal)."""
    return _named_vs("he_normal", 2.0, _check_mode(mode), "normal", he_normal.__doc__)


def he_uniform(mode: str = "fan_in") -> Initializer:
    """He/Kaiming uniform: U[-sqrt(6 / fan_in), +sqrt(6 / fan_in)], Var(W) = 2 / fan_in
    (fan_out with mode="fan_out") = variance_scaling(2, mode, uniform)."""
    return _named_vs("he_uniform", 2.0, _check_mode(mode), "uniform", he_uniform.__doc__)


def lecun_normal() -> Initializer:
    """LeCun normal N(0, Var(W)) with Var(W) = 1 / fan_in = variance_scaling(1, fan_in, normal)
    (the init for SELU networks)."""
    return _named_vs("lecun_normal", 1.0, "fan_in", "normal", lecun_normal.__doc__)


def lecun_uniform() -> Initializer:
    """LeCun uniform: U[-sqrt(3 / fan_in), +sqrt(3 / fan_in)], Var(W) = 1 / fan_in =
    variance_scaling(1, fan_in, uniform)."""
    return _named_vs("lecun_uniform", 1.0, "fan_in", "uniform", lecun_uniform.__doc__)


class _Normal(Initializer):
    def __init__(self, std: float) -> None:
        self.std = _real("std", std)
        if self.std < 0:
            raise ValueError(f"std must be >= 0, got {std!r}")
        super().__init__("normal", {"std": self.std}, f"Normal N(0, std^2), Var(W) = {std}^2.")

    def sample(self, shape, gen):
        return gen.normal(0.0, self.std, size=shape)

    def variance(self, fan_in: int, fan_out: int) -> float:
        return self.std**2


class _Uniform(Initializer):
    def __init__(self, name: str, limit: float | None, doc: str) -> None:
        params = {} if limit is None else {"limit": limit}
        super().__init__(name, params, doc)
        self._fixed = limit

    def limit(self, fan_in: int, fan_out: int) -> float | None:
        return self._fixed if self._fixed is not None else 1.0 / math.sqrt(fan_in)

    def variance(self, fan_in: int, fan_out: int) -> float:
        return self.limit(fan_in, fan_out) ** 2 / 3.0

    def sample(self, shape, gen):
        lim = self.limit(*compute_fans(shape))
        return gen.uniform(-lim, lim, size=shape)


class _Constant(Initializer):
    def __init__(self, name: str, value: float) -> None:
        self.value = _real("value", value)
        params = {} if name == "zeros" else {"value": self.value}
        doc = "All zeros, Var(W) = 0." if name == "zeros" else f"Constant {value}, Var(W) = 0."
        super().__init__(name, params, doc)

    def sample(self, shape, gen):
        return np.full(shape, self.value, dtype=np.float64)

    def variance(self, fan_in: int, fan_out: int) -> float:
        return 0.0


class _Orthogonal(Initializer):
    def __init__(self, gain: float) -> None:
        self.gain = _real("gain", gain)
        super().__init__(
            "orthogonal", {"gain": self.gain},
            f"Orthogonal (Saxe et al. 2013) times gain {gain}: W^T W = gain^2 I (tall) or "
            f"W W^T = gain^2 I (wide); Var(W) = mean square = gain^2 / max(rows, cols).",
        )

    def sample(self, shape, gen):
        if len(shape) < 2:
            raise ValueError(
                f"orthogonal init needs a shape with 2 or more dimensions, got {shape!r}; "
                f"use zeros/constant/normal for biases"
            )
        rows, cols = math.prod(shape[:-1]), shape[-1]
        g = gen.standard_normal((rows, cols))
        if rows < cols:
            g = g.T
        q, r = np.linalg.qr(g)  # reduced QR: q has orthonormal columns
        d = np.sign(np.diag(r))
        d[d == 0] = 1.0
        q *= d
        if rows < cols:
            q = q.T
        q *= self.gain
        return np.ascontiguousarray(q).reshape(shape)

    def variance(self, fan_in: int, fan_out: int) -> float:
        return self.gain**2 / max(fan_in, fan_out)


def normal(std: float = 1.0) -> Initializer:
    """Normal N(0, std^2) (default std 1): Var(W) = std^2."""
    return _Normal(std)


def uniform(limit: float = 1.0) -> Initializer:
    """Uniform U[-limit, limit] (default 1): Var(W) = limit^2 / 3."""
    lim = _real("limit", limit, positive=True)
    return _Uniform("uniform", lim, f"Uniform U[-{lim}, {lim}], Var(W) = {lim}^2 / 3.")


def fan_in_uniform() -> Initializer:
    """Glorot & Bengio's "standard" init U[-1/sqrt(fan_in), 1/sqrt(fan_in)]: Var(W) =
    1 / (3 fan_in)."""
    return _Uniform("fan_in_uniform", None, fan_in_uniform.__doc__)


def zeros() -> Initializer:
    """All zeros: Var(W) = 0."""
    return _Constant("zeros", 0.0)


def constant(value: float = 0.0) -> Initializer:
    """Every entry equal to ``value``: Var(W) = 0."""
    return _Constant("constant", value)


def orthogonal(gain: float = 1.0) -> Initializer:
    """Orthogonal init (Saxe et al. 2013): QR of a Gaussian matrix, Q times sign(diag R),
    transposed when rows < cols, times ``gain``. Shapes with more than 2 dimensions are
    flattened to (prod(shape[:-1]), shape[-1]). Var(W) = gain^2 / max(fan_in, fan_out)."""
    return _Orthogonal(gain)


_REGISTRY: dict[str, Callable[..., Initializer]] = {
    "normal": normal,
    "uniform": uniform,
    "fan_in_uniform": fan_in_uniform,
    "glorot_normal": glorot_normal,
    "glorot_uniform": glorot_uniform,
    "he_normal": he_normal,
    "he_uniform": he_uniform,
    "lecun_normal": lecun_normal,
    "lecun_uniform": lecun_uniform,
    "zeros": zeros,
    "constant": constant,
    "orthogonal": orthogonal,
    "variance_scaling": variance_scaling,
}

_ALIASES = {
    "xavier_normal": "glorot_normal",
    "xavier_uniform": "glorot_uniform",
    "kaiming_normal": "he_normal",
    "kaiming_uniform": "he_uniform",
    "standard": "fan_in_uniform",
    "zero": "zeros",
}

INITIALIZERS: tuple[str, ...] = tuple(_REGISTRY)
"""The registered initializer names."""


def get_initializer(name: str | Callable, **kwargs: Any) -> Callable:
    """The initializer ``init(shape, rng, dtype)`` registered under ``name``, built with ``kwargs``.

    A callable passes through unchanged (no kwargs allowed then). Unknown names raise
    ValueError, unknown keyword arguments TypeError.
    """
    if callable(name) and not isinstance(name, str):
        if kwargs:
            raise TypeError(f"cannot apply arguments {sorted(kwargs)} to the callable {name!r}")
        return name
    if not isinstance(name, str):
        raise TypeError(
            f"initializer must be a name or a callable, got {type(name).__name__} {name!r}; "
            f"expected one of: {', '.join(INITIALIZERS)}"
        )
    key = name.strip().lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key not in _REGISTRY:
        raise ValueError(
            f"unknown initializer {name!r}; expected one of: {', '.join(INITIALIZERS)}"
        )
    factory = _REGISTRY[key]
    accepted = list(inspect.signature(factory).parameters)
    for k in kwargs:
        if k not in accepted:
            raise TypeError(
                f"unknown argument {k!r} for initializer {key!r}; accepted: "
                f"{', '.join(accepted) if accepted else '(none)'}"
            )
    return factory(**kwargs)


def weight_variance(name: str | Initializer, fan_in: int, fan_out: int, **kwargs: Any) -> float:
    """Theoretical Var(W_ij) of initializer ``name`` for a (fan_in, fan_out) weight matrix,
    e.g. 2 / (fan_in + fan_out) for glorot_*, 2 / fan_in for he_*, std^2 for normal."""
    init = get_initializer(name, **kwargs)
    if not isinstance(init, Initializer):
        raise TypeError(f"no theoretical variance for the callable {init!r}")
    fan_in, fan_out = compute_fans((fan_in, fan_out))
    return float(init.variance(fan_in, fan_out))
