"""Weight initializers.

An initializer is a callable ``init(shape, rng, dtype="float32") -> array``. Dense weights have
shape ``(fan_in, fan_out)``; for a 1-D shape ``fan_in = fan_out = shape[0]``, but a Dense
layer's bias is drawn with its weight's fans (``init((fan_out,), rng, dtype, fans=(fan_in,
fan_out))``, torch's ``nn.Linear`` rule: ``fan_in_uniform`` gives its default bias
U[-1/sqrt(fan_in), 1/sqrt(fan_in)]). Samples
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

Normals are untruncated; ``variance_scaling(..., distribution="truncated_normal")`` draws
N(0, s^2) cut at +-2 s with s = sqrt(scale / fan) / 0.8796 (Keras' rule), so that its variance
is still scale / fan. ``weight_variance(name, fan_in, fan_out, **kw)`` returns the variance
of each entry without sampling (for theory code). LSUV lives in ``depthlab.lsuv``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from .backend import Array, resolve_dtype, xp
from .backend import rng as make_rng
from .registry import Registry
from .validators import real

__all__ = [
    "INITIALIZERS",
    "REGISTRY",
    "Constant",
    "FanInUniform",
    "GlorotNormal",
    "GlorotUniform",
    "HeNormal",
    "HeUniform",
    "Initializer",
    "LecunNormal",
    "LecunUniform",
    "Normal",
    "Orthogonal",
    "TruncNormal",
    "Uniform",
    "VarianceScaling",
    "Zeros",
    "calculate_gain",
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
    "trunc_normal",
    "uniform",
    "variance_scaling",
    "off_recipe_ratio",
    "weight_variance",
    "zeros",
]

_MODES = ("fan_in", "fan_out", "fan_avg")
_DISTRIBUTIONS = ("normal", "uniform", "truncated_normal")
# Keras' name of the untruncated normal (in Keras "normal" means the truncated one; here it
# does not: "normal" is untruncated, as the docstring of VarianceScaling says)
_DISTRIBUTION_SYNONYMS = {"untruncated_normal": "normal"}

# std of N(0, 1) truncated to [-2, 2]: sqrt(1 - 4 phi(2) / (2 Phi(2) - 1)) (Keras' constant)
_TRUNC_STD = 0.87962566103423978


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


class Initializer:
    """A named initializer ``init(shape, rng, dtype) -> array`` with its theoretical variance.

    ``sample(shape, rng)`` draws float64 values; ``variance(fan_in, fan_out)`` is Var(W_ij);
    ``params`` holds the settings (shown by ``repr``).
    """

    name = "initializer"

    @property
    def params(self) -> dict[str, Any]:
        """The settings of this initializer (empty when it has none)."""
        return {}

    def sample(self, shape: tuple[int, ...], gen: np.random.Generator) -> Array:
        """Draw an array of ``shape`` (float64) from ``gen``; ``__call__`` casts it."""
        raise NotImplementedError

    def sample_fans(self, shape: tuple[int, ...], gen: np.random.Generator,
                    fans: tuple[int, int]) -> Array:
        """:meth:`sample` with the fan-based rules reading ``fans`` = (fan_in, fan_out) in
        place of the shape's (the fan-free initializers ignore them)."""
        return self.sample(shape, gen)

    def variance(self, fan_in: int, fan_out: int) -> float:
        """The variance ``Var(W)`` of one entry for a layer of these fans (the class
        docstring's formula), used by the theory."""
        raise NotImplementedError

    def shape_variance(self, shape: tuple[int, ...]) -> float:
        """``Var(W)`` of one entry of an array of ``shape``: :meth:`variance` of its
        :func:`compute_fans` (an initializer that reads the shape otherwise overrides it)."""
        return self.variance(*compute_fans(shape))

    def limit(self, fan_in: int, fan_out: int) -> float | None:
        """Bound on |W| for uniform initializers, None otherwise."""
        return None

    def __call__(
        self, shape: tuple[int, ...], rng: np.random.Generator | int | None = None,
        dtype: Any = "float32", *, fans: tuple[int, int] | None = None,
    ) -> Array:
        """An array of ``shape`` in ``dtype``; ``fans`` (fan_in, fan_out), when given, replace
        :func:`compute_fans` of the shape (a Dense bias takes its weight's fans)."""
        shape = _check_shape(shape)
        dt = resolve_dtype(dtype)
        self._check_memory(shape, dt)
        gen = make_rng(rng)
        with np.errstate(over="ignore"):  # a sample too large for dt: refused below
            if fans is None:
                fans = compute_fans(shape)
                w = xp.asarray(self.sample(shape, gen), dtype=dt)
            else:
                fans = compute_fans(tuple(fans))
                w = xp.asarray(self.sample_fans(shape, gen, fans), dtype=dt)
            lim = self.limit(*fans)
            if lim is not None and dt != np.float64:
                # rounding to float32 must not push a sample past the limit
                lim32 = dt.type(lim)
                if float(lim32) > lim:
                    lim32 = np.nextafter(lim32, dt.type(0))
                xp.clip(w, -lim32, lim32, out=w)
        largest = float(np.finfo(dt).max)
        if not xp.isfinite(w).all() or (lim is not None and lim > largest):
            raise ValueError(f"{self!r} drew values that do not fit in {dt.name} (|w| <= "
                             f"{largest:.3g}); expected smaller settings or dtype='float64'")
        return w

    #: float64 arrays of the shape that :meth:`sample` holds at once (its draw)
    sample_copies = 1

    def _check_memory(self, shape: tuple[int, ...], dt: np.dtype) -> None:
        """Refuse (:class:`~depthlab.memory.MemoryRefusal`, before drawing) a ``shape`` whose
        float64 samples (``sample_copies`` of them), their cast to ``dt`` and the finite
        check's mask cannot fit: ``init((10**6, 10**6))`` was NumPy's 'Unable to allocate
        7.28 TiB'. Small shapes skip reading the memory."""
        from .memory import CHECK_FROM_BYTES, check_fits

        n = math.prod(shape)
        need = n * (8 * self.sample_copies + dt.itemsize + 1)
        if need >= CHECK_FROM_BYTES:
            check_fits(need, f"{self!r} of shape {shape} ({n:,} {dt.name} values)")

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{self.name}({args})"


class VarianceScaling(Initializer):
    """Var(W) = scale / fan with fan = fan_in, fan_out or (fan_in + fan_out) / 2 (``mode``).

    ``normal`` (Keras' ``untruncated_normal`` too): N(0, scale / fan), untruncated;
    ``uniform``: U[-sqrt(3 scale / fan), +sqrt(3 scale / fan)] (the same variance);
    ``truncated_normal``: N(0, s^2) redrawn outside [-2 s, 2 s], s = sqrt(scale / fan) /
    0.87962566 (the std of a unit normal cut at +-2: Keras' and TensorFlow's
    ``truncated_normal``), the same variance again.
    """

    name = "variance_scaling"

    def __init__(self, scale: float = 1.0, mode: str = "fan_in",
                 distribution: str = "normal") -> None:
        self.scale = real("scale", scale, positive=True)
        if mode not in _MODES:
            raise ValueError(f"unknown mode {mode!r}; expected one of: {', '.join(_MODES)}")
        distribution = _DISTRIBUTION_SYNONYMS.get(distribution, distribution) \
            if isinstance(distribution, str) else distribution
        if distribution not in _DISTRIBUTIONS:
            raise ValueError(f"unknown distribution {distribution!r}; expected one of: "
                             f"{', '.join(_DISTRIBUTIONS)} (untruncated_normal, Keras' name, "
                             "is normal)")
        self.mode, self.distribution = mode, distribution

    @property
    def params(self) -> dict[str, Any]:
        return {"scale": self.scale, "mode": self.mode, "distribution": self.distribution}

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
        if self.distribution == "truncated_normal":
            return 2.0 * math.sqrt(self.variance(fan_in, fan_out)) / _TRUNC_STD
        return None

    @property
    def sample_copies(self) -> int:  # type: ignore[override]
        """The truncated draw also holds a redraw mask and its redrawn values."""
        return 2 if self.distribution == "truncated_normal" else 1

    def sample(self, shape: tuple[int, ...], gen: np.random.Generator) -> Array:
        return self.sample_fans(shape, gen, compute_fans(shape))

    def sample_fans(self, shape: tuple[int, ...], gen: np.random.Generator,
                    fans: tuple[int, int]) -> Array:
        fan_in, fan_out = fans
        if self.distribution == "normal":
            return gen.normal(0.0, math.sqrt(self.variance(fan_in, fan_out)), size=shape)
        if self.distribution == "truncated_normal":
            z = gen.standard_normal(size=shape)
            out = np.abs(z) > 2.0
            while out.any():  # 4.6% redrawn each round
                z[out] = gen.standard_normal(size=int(out.sum()))
                out = np.abs(z) > 2.0
            z *= math.sqrt(self.variance(fan_in, fan_out)) / _TRUNC_STD
            return z
        lim = self.limit(fan_in, fan_out)
        return gen.uniform(-lim, lim, size=shape)


def _fan_in_or_out(mode: str) -> str:
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"unknown mode {mode!r}; expected one of: fan_in, fan_out")
    return mode


# The named special cases, one declaration each (as Keras 3 declares GlorotUniform).


class _Glorot(VarianceScaling):
    """Glorot/Xavier: Var(W) = 2 g^2 / (fan_in + fan_out), ``gain`` g torch's ``xavier_*_(gain=)``
    (the subclass names the distribution)."""

    _distribution = "normal"

    def __init__(self, gain: float = 1.0) -> None:
        self.gain = real("gain", gain, positive=True)
        if not math.isfinite(self.gain * self.gain):  # gain**2 was a bare OverflowError
            raise ValueError(f"gain={gain!r}: the weight variance 2 gain^2 / (fan_in + fan_out) "
                             "overflows float64; expected a gain below 1.3e154")
        super().__init__(self.gain**2, "fan_avg", self._distribution)

    @property
    def params(self) -> dict[str, Any]:
        return {"gain": self.gain}


class GlorotNormal(_Glorot):
    """Glorot/Xavier normal N(0, Var(W)) with Var(W) = 2 / (fan_in + fan_out) =
    variance_scaling(1, fan_avg, normal); ``gain`` g (torch's ``xavier_normal_(gain=)``, e.g.
    ``calculate_gain("tanh")``) multiplies the std: Var(W) = 2 g^2 / (fan_in + fan_out)."""

    name = "glorot_normal"


class GlorotUniform(_Glorot):
    """Glorot/Xavier "normalized" init: U[-sqrt(6 / (fan_in + fan_out)), +...], Var(W) =
    2 / (fan_in + fan_out) = variance_scaling(1, fan_avg, uniform); ``gain`` g (torch's
    ``xavier_uniform_(gain=)``) multiplies the bound: Var(W) = 2 g^2 / (fan_in + fan_out)."""

    name = "glorot_uniform"
    _distribution = "uniform"


def _own_slope(nonlinearity: Any) -> float | None:
    """The negative slope of a depthlab ``LeakyReLU`` object (None for anything else)."""
    from .activations import LeakyReLU

    return float(nonlinearity.negative_slope) if isinstance(nonlinearity, LeakyReLU) else None


def _gain_squared(nonlinearity: Any, param: float | None) -> float:
    """``calculate_gain(nonlinearity, param)^2`` written without the square root (ReLU's 2 is
    2 exactly, not sqrt(2)^2 = 2.0000000000000004)."""
    name = _gain_name(nonlinearity)
    if name == "leaky_relu":
        slope = 0.01 if param is None else real("param", param)
        return 2.0 / (1.0 + slope * slope)
    return {"tanh": 25.0 / 9.0, "relu": 2.0, "selu": 9.0 / 16.0}.get(name, 1.0)


class _He(VarianceScaling):
    """He/Kaiming: Var(W) = calculate_gain(nonlinearity, a)^2 / fan (torch's ``kaiming_*_(a,
    mode, nonlinearity)``, ``a`` read as ``negative_slope``; a depthlab ``LeakyReLU`` object as
    ``nonlinearity`` gives its own slope, as :func:`calculate_gain` reads it; the subclass
    names the distribution)."""

    _distribution = "normal"

    def __init__(self, mode: str = "fan_in", negative_slope: float = 0.0,
                 nonlinearity: str = "leaky_relu", a: float = 0.0) -> None:
        a = real("a", a)
        if a != 0.0:  # torch's name of the slope (kaiming_uniform_(w, a=math.sqrt(5)))
            if negative_slope not in (0.0, a):
                raise ValueError(f"a={a!r} and negative_slope={negative_slope!r} name one "
                                 "slope (a is torch's name); give one of them")
            negative_slope = a
        negative_slope = real("negative_slope", negative_slope)
        self.nonlinearity = _gain_name(nonlinearity)  # checked first: one clear line
        own = _own_slope(nonlinearity)
        if own is not None:  # a LeakyReLU object: its slope, as calculate_gain(obj) reads it
            if negative_slope not in (0.0, own):
                raise ValueError(f"negative_slope={negative_slope!r} and the slope of "
                                 f"{nonlinearity!r} ({own!r}) name one slope; give one of them")
            negative_slope = own
        self.negative_slope = negative_slope
        gain2 = _gain_squared(nonlinearity, self.negative_slope)
        if gain2 == 0.0:  # 2 / (1 + a^2) underflowed: "scale must be > 0, got 0.0" named no a
            raise ValueError(f"negative_slope (torch's a) = {negative_slope!r}: the weight "
                             "variance 2 / ((1 + a^2) fan) underflows to 0; expected |a| below "
                             "1.3e154")
        super().__init__(gain2, _fan_in_or_out(mode), self._distribution)

    @property
    def params(self) -> dict[str, Any]:
        return {"mode": self.mode, "negative_slope": self.negative_slope,
                "nonlinearity": self.nonlinearity}


class HeNormal(_He):
    """He/Kaiming normal N(0, Var(W)) with Var(W) = 2 / fan_in (2 / fan_out with
    mode="fan_out") = variance_scaling(2, mode, normal); torch's ``kaiming_normal_(a=,
    nonlinearity=)``: Var(W) = calculate_gain(nonlinearity, a)^2 / fan, i.e. with the default
    ``nonlinearity="leaky_relu"`` and ``negative_slope`` a, Var(W) = 2 / ((1 + a^2) fan)."""

    name = "he_normal"


class HeUniform(_He):
    """He/Kaiming uniform: U[-sqrt(6 / fan_in), +sqrt(6 / fan_in)], Var(W) = 2 / fan_in
    (fan_out with mode="fan_out") = variance_scaling(2, mode, uniform); torch's
    ``kaiming_uniform_(a=, nonlinearity=)``: bound = calculate_gain(nonlinearity, a)
    sqrt(3 / fan)."""

    name = "he_uniform"
    _distribution = "uniform"


class _Lecun(VarianceScaling):
    """LeCun: Var(W) = 1 / fan_in (the subclass names the distribution)."""

    _distribution = "normal"

    def __init__(self) -> None:
        super().__init__(1.0, "fan_in", self._distribution)

    @property
    def params(self) -> dict[str, Any]:
        return {}


class LecunNormal(_Lecun):
    """LeCun normal N(0, Var(W)) with Var(W) = 1 / fan_in = variance_scaling(1, fan_in, normal)
    (the init for SELU networks)."""

    name = "lecun_normal"


class LecunUniform(_Lecun):
    """LeCun uniform: U[-sqrt(3 / fan_in), +sqrt(3 / fan_in)], Var(W) = 1 / fan_in =
    variance_scaling(1, fan_in, uniform)."""

    name = "lecun_uniform"
    _distribution = "uniform"


class Normal(Initializer):
    """Normal N(0, std^2) (default std 1): Var(W) = std^2."""

    name = "normal"

    def __init__(self, std: float = 1.0) -> None:
        self.std = real("std", std)
        if self.std < 0:
            raise ValueError(f"std must be >= 0, got {std!r}")

    @property
    def params(self) -> dict[str, Any]:
        return {"std": self.std}

    def sample(self, shape: tuple[int, ...], gen: np.random.Generator) -> Array:
        return gen.normal(0.0, self.std, size=shape)

    def variance(self, fan_in: int, fan_out: int) -> float:
        return self.std * self.std  # inf past 1.3e154 (std**2: a bare OverflowError)


class TruncNormal(Initializer):
    """torch's ``trunc_normal_(w, std=, a=, b=)``: N(0, std^2) restricted to [a, b] (the
    bounds are values of W, not multiples of std; the default [-2, 2] leaves std=0.02 all but
    untruncated). ``std`` is the normal's std *before* truncation, so with beta = b / std
    (depthlab's weights are zero-mean: ``a = -b``)

        Var(W) = std^2 (1 - 2 beta phi(beta) / (2 Phi(beta) - 1)),

    phi and Phi the unit normal's density and CDF: 0.774 std^2 at beta = 2 (the std
    shrinks to 0.880 std), b^2 / 3 as beta -> 0 (a uniform). Keras' ``variance_scaling(...,
    "truncated_normal")`` corrects the std instead; this one does not, as torch does not."""

    name = "trunc_normal"
    sample_copies = 2  # the draw and a redraw mask (or the uniforms of the inverse CDF)

    def __init__(self, std: float = 1.0, a: float = -2.0, b: float = 2.0) -> None:
        self.std = real("std", std, positive=True)
        self.a, self.b = real("a", a), real("b", b)
        if not self.a < 0.0 < self.b or self.a != -self.b:
            raise ValueError(f"trunc_normal needs bounds a = -b < 0 < b (zero-mean weights), "
                             f"got a={a!r}, b={b!r}")

    @property
    def params(self) -> dict[str, Any]:
        return {"std": self.std, "a": self.a, "b": self.b}

    def _beta(self) -> float:
        return self.b / self.std

    def limit(self, fan_in: int, fan_out: int) -> float | None:
        return self.b

    def variance(self, fan_in: int, fan_out: int) -> float:
        beta = self._beta()
        if beta < 1e-3:  # 1 - (1 - beta^2 / 3 ...) cancels: the series, error O(beta^6)
            return self.b * self.b / 3.0 * (1.0 - 2.0 * beta * beta / 15.0)
        mass = math.erf(beta / math.sqrt(2.0))  # 2 Phi(beta) - 1
        pdf = math.exp(-0.5 * beta * beta) / math.sqrt(2.0 * math.pi)
        return self.std * self.std * (1.0 - 2.0 * beta * pdf / mass)

    def sample(self, shape: tuple[int, ...], gen: np.random.Generator) -> Array:
        beta = self._beta()
        if math.erf(beta / math.sqrt(2.0)) > 0.5:  # most draws land inside: redraw the others
            z = gen.standard_normal(size=shape)
            out = np.abs(z) > beta
            while out.any():
                z[out] = gen.standard_normal(size=int(out.sum()))
                out = np.abs(z) > beta
        else:  # a narrow window: the inverse CDF of uniforms over [Phi(-beta), Phi(beta)]
            from scipy.special import ndtri

            lo = 0.5 * math.erfc(beta / math.sqrt(2.0))
            z = ndtri(gen.uniform(lo, 1.0 - lo, size=shape))
            np.clip(z, -beta, beta, out=z)
        z *= self.std
        return z


class Uniform(Initializer):
    """Uniform U[-limit, limit] (default 1): Var(W) = limit^2 / 3.

    Zero-mean, unlike torch's ``nn.init.uniform_(w, a=0.0, b=1.0)``, whose default U[0, 1)
    has mean 1/2: torch's bounds ``a``, ``b`` are taken when symmetric (``a = -b``, then
    ``limit = b``: ``uniform_(w, -0.05, 0.05)`` is ``uniform(a=-0.05, b=0.05)``), as
    ``trunc_normal``'s are; other bounds are a ValueError naming them."""

    name = "uniform"

    def __init__(self, limit: float = 1.0, *, a: float | None = None,
                 b: float | None = None) -> None:
        self.fixed_limit = real("limit", limit, positive=True)
        if a is not None or b is not None:
            self.fixed_limit = _symmetric_bounds(a, b, limit)

    @property
    def params(self) -> dict[str, Any]:
        return {"limit": self.fixed_limit}

    def limit(self, fan_in: int, fan_out: int) -> float | None:
        return self.fixed_limit

    def variance(self, fan_in: int, fan_out: int) -> float:
        lim = self.limit(fan_in, fan_out)
        return lim * lim / 3.0  # inf past 1.3e154 (lim**2: a bare OverflowError)

    def sample(self, shape: tuple[int, ...], gen: np.random.Generator) -> Array:
        return self.sample_fans(shape, gen, compute_fans(shape))

    def sample_fans(self, shape: tuple[int, ...], gen: np.random.Generator,
                    fans: tuple[int, int]) -> Array:
        lim = self.limit(*fans)
        return gen.uniform(-lim, lim, size=shape)


def _symmetric_bounds(a: float | None, b: float | None, limit: float) -> float:
    """``b`` for torch's bounds ``a = -b < 0 < b`` of :class:`Uniform`; ValueError naming
    them otherwise (one of them missing, not symmetric, or a ``limit`` that says another
    bound)."""
    if a is None or b is None:
        raise ValueError(f"uniform takes torch's bounds a and b together (a = -b), got a={a!r}, "
                         f"b={b!r}; or give limit (U(-limit, limit))")
    lo, hi = real("a", a), real("b", b)
    if not lo < 0.0 < hi or lo != -hi:
        raise ValueError(f"uniform draws zero-mean weights U(-b, b): bounds a = -b < 0 < b, got "
                         f"a={a!r}, b={b!r} (torch's uniform_ default U(0, 1) has mean 0.5; "
                         "depthlab's theory takes zero-mean weights)")
    if limit != 1.0 and limit != hi:
        raise ValueError(f"uniform got limit={limit!r} and bounds a={a!r}, b={b!r}; give one "
                         "of them")
    return hi


class FanInUniform(Uniform):
    """Glorot & Bengio's "standard" init U[-1/sqrt(fan_in), 1/sqrt(fan_in)]: Var(W) =
    1 / (3 fan_in)."""

    name = "fan_in_uniform"

    def __init__(self) -> None:
        pass

    @property
    def params(self) -> dict[str, Any]:
        return {}

    def limit(self, fan_in: int, fan_out: int) -> float | None:
        return 1.0 / math.sqrt(fan_in)


class Constant(Initializer):
    """Every entry equal to ``value``: Var(W) = 0."""

    name = "constant"

    def __init__(self, value: float = 0.0) -> None:
        self.value = real("value", value)

    @property
    def params(self) -> dict[str, Any]:
        return {"value": self.value}

    def sample(self, shape: tuple[int, ...], gen: np.random.Generator) -> Array:
        return np.full(shape, self.value, dtype=np.float64)

    def variance(self, fan_in: int, fan_out: int) -> float:
        return 0.0


class Zeros(Constant):
    """All zeros: Var(W) = 0."""

    name = "zeros"

    def __init__(self) -> None:
        super().__init__(0.0)

    @property
    def params(self) -> dict[str, Any]:
        return {}


class Orthogonal(Initializer):
    """Orthogonal init (Saxe et al. 2013): QR of a Gaussian matrix, Q times sign(diag R),
    transposed when rows < cols, times ``gain``: W^T W = gain^2 I (tall) or W W^T = gain^2 I
    (wide). Shapes with more than 2 dimensions are flattened to (prod(shape[:-1]),
    shape[-1]) (Keras' convention). Var(W) = gain^2 / max(rows, cols) of that matrix: for a
    2-D (fan_in, fan_out) shape ``variance(fan_in, fan_out) = gain^2 / max(fan_in, fan_out)``;
    for a shape ``(r..., in, out)`` it is ``gain^2 / max(r in, out)``
    (:meth:`shape_variance`), not ``variance(*compute_fans(shape)) = gain^2 / max(r in,
    r out)``, which the fans alone cannot tell apart: (3, 4, 5) samples 1/12, the fans
    (12, 15) give 1/15."""

    name = "orthogonal"
    sample_copies = 3  # the Gaussian draw, LAPACK's copy of it and Q

    def __init__(self, gain: float = 1.0) -> None:
        self.gain = real("gain", gain)

    @property
    def params(self) -> dict[str, Any]:
        return {"gain": self.gain}

    def sample(self, shape: tuple[int, ...], gen: np.random.Generator) -> Array:
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
        return self.gain * self.gain / max(fan_in, fan_out)  # inf past 1.3e154, no raise

    def shape_variance(self, shape: tuple[int, ...]) -> float:
        """``gain^2 / max(rows, cols)`` of the flattened ``(prod(shape[:-1]), shape[-1])``
        matrix that :meth:`sample` draws (for 2-D shapes :meth:`variance` of the fans)."""
        shape = _check_shape(shape)
        if len(shape) < 2:
            return self.variance(*compute_fans(shape))
        return self.gain * self.gain / max(math.prod(shape[:-1]), shape[-1])


# the function-style names of the public API
variance_scaling = VarianceScaling
glorot_normal, glorot_uniform = GlorotNormal, GlorotUniform
he_normal, he_uniform = HeNormal, HeUniform
lecun_normal, lecun_uniform = LecunNormal, LecunUniform
normal, uniform, fan_in_uniform = Normal, Uniform, FanInUniform
trunc_normal = TruncNormal
zeros, constant, orthogonal = Zeros, Constant, Orthogonal

REGISTRY: Registry[Initializer] = Registry(
    "initializer",
    {cls.name: cls for cls in (Normal, TruncNormal, Uniform, FanInUniform, GlorotNormal,
                               GlorotUniform, HeNormal, HeUniform, LecunNormal, LecunUniform,
                               Zeros, Constant, Orthogonal, VarianceScaling)},
    aliases={"xavier_normal": "glorot_normal", "xavier_uniform": "glorot_uniform",
             "kaiming_normal": "he_normal", "kaiming_uniform": "he_uniform",
             "standard": "fan_in_uniform", "zero": "zeros"},
    passes=lambda obj: callable(obj) and not isinstance(obj, str),
)

INITIALIZERS: tuple[str, ...] = REGISTRY.names
"""The registered initializer names."""


def get_initializer(name: str | Callable, **kwargs: Any) -> Callable:
    """The initializer ``init(shape, rng, dtype)`` registered under ``name``, built with ``kwargs``.

    A callable passes through unchanged (no kwargs allowed then). Unknown names raise
    ValueError, unknown keyword arguments TypeError.
    """
    return REGISTRY.build(name, **kwargs)


_GAIN_ONE = ("linear", "identity", "sigmoid", "conv1d", "conv2d", "conv3d", "conv_transpose1d",
             "conv_transpose2d", "conv_transpose3d")


def calculate_gain(nonlinearity: Any, param: float | None = None) -> float:
    """``torch.nn.init.calculate_gain``: the factor g for which weights of std g / sqrt(fan)
    keep the signal's scale through ``nonlinearity``: 1 for linear, identity, sigmoid and
    convolutions, 5/3 for tanh, sqrt(2) for relu, sqrt(2 / (1 + slope^2)) for leaky_relu
    (``param`` the negative slope, default 0.01; a depthlab ``LeakyReLU`` object gives its
    own), 3/4 for selu. Other names are a ValueError naming these (torch refuses them too)."""
    from .activations import LeakyReLU

    if isinstance(nonlinearity, LeakyReLU) and param is None:
        param = nonlinearity.negative_slope
    name = _gain_name(nonlinearity)
    if name in _GAIN_ONE:
        return 1.0
    if name == "tanh":
        return 5.0 / 3.0
    if name == "relu":
        return math.sqrt(2.0)
    if name == "selu":
        return 3.0 / 4.0
    slope = 0.01 if param is None else real("param", param)
    if not math.isfinite(slope * slope):  # slope**2 was a bare OverflowError: sqrt(2) / |a|
        return math.sqrt(2.0) / abs(slope)
    return math.sqrt(2.0 / (1.0 + slope**2))  # leaky_relu, the last name _gain_name passes


def _gain_name(nonlinearity: Any) -> str:
    """The name of ``nonlinearity`` (a name or a depthlab activation) when
    :func:`calculate_gain` has a gain for it; TypeError / ValueError naming the accepted ones
    otherwise."""
    from .activations import ActivationFn

    name = nonlinearity.name if isinstance(nonlinearity, ActivationFn) else nonlinearity
    if not isinstance(name, str):
        raise TypeError(f"nonlinearity must be a name, got {nonlinearity!r}")
    accepted = (*_GAIN_ONE, "tanh", "relu", "leaky_relu", "selu")
    if name not in accepted:
        raise ValueError(f"no gain for nonlinearity {name!r}; accepted: {', '.join(accepted)} "
                         "(torch.nn.init.calculate_gain's names)")
    return name


def weight_variance(name: str | Initializer, fan_in: int, fan_out: int, **kwargs: Any) -> float:
    """Theoretical Var(W_ij) of initializer ``name`` for a (fan_in, fan_out) weight matrix,
    e.g. 2 / (fan_in + fan_out) for glorot_*, 2 / fan_in for he_*, std^2 for normal."""
    init = get_initializer(name, **kwargs)
    if not isinstance(init, Initializer):
        raise TypeError(f"no theoretical variance for the callable {init!r}")
    fan_in, fan_out = compute_fans((fan_in, fan_out))
    return float(init.variance(fan_in, fan_out))


OFF_RECIPE_LOG = 0.2
"""A weight array whose ``|ln(E[W^2] / Var_init(W))|`` exceeds ``max(OFF_RECIPE_LOG,
6 sqrt(2 / entries))`` (six sampling errors of a variance estimate from that many entries) is
not its initializer's draw: trained, rescaled by hand, or :func:`depthlab.lsuv`."""


def off_recipe_ratio(w: Array, variance: float) -> float | None:
    """``E[W^2] / variance`` of the array ``w`` when it departs from an initializer's
    ``variance`` beyond sampling noise (:data:`OFF_RECIPE_LOG`), ``inf`` for non-finite
    entries; None when ``w`` is consistent with it (or either is 0: nothing to compare)."""
    a = np.asarray(w)
    flat = a.ravel()  # a view of a contiguous array: no float64 copy of a large layer
    with np.errstate(all="ignore"):  # float32 squares past its range: inf, judged off below
        m2 = float(np.vdot(flat, flat).real) / a.size if a.size else 0.0
    if not math.isfinite(m2):
        return math.inf
    if not (variance > 0 and m2 > 0):
        return None
    ratio = m2 / variance
    return ratio if abs(math.log(ratio)) > max(OFF_RECIPE_LOG,
                                               6.0 * math.sqrt(2.0 / a.size)) else None
